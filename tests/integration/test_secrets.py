"""Planted secrets never surface: not in logs, events, results, pages, URLs we build, or plain Redis values."""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from celery import Celery
from cryptography.fernet import Fernet

from config import Settings
from tests.integration.test_cli import cli
from tests.support.observe import EventLog, all_redis_text, broker_messages, disk_text, spellings
from tests.support.processes import wait_until
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from tests.support.web import Gunicorn
from tests.support.webhook_receiver import WebhookReceiver
from workers.crypto.sealing import Sealer, public_key_for
from workers.engine.registry import Registry
from workers.engine.runtime import build_runtime
from workers.errors import SpecError
from workers.producer import call, send

pytestmark = pytest.mark.e2e

CC_SECRET = "PLANTED-cc-secret-4be1"
RT_SECRET = "PLANTED-rt-secret-77c0"
AC_SECRET = "PLANTED-ac-secret-19fa"
WRONG_SECRET = "PLANTED-wrong-secret-d00d"
CODE = "PLANTED-code-5e5e"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch_authorized(url: str, *, table: bool = True) -> str:
    credentials = base64.b64encode(b"admin:ops-pw").decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {credentials}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        page = response.read().decode()
    assert "<table" in page or not table
    return page


def fetch(url: str, cookie: str = "") -> tuple[int, dict[str, str], str]:
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def ops_env(environ: dict[str, str], receiver: WebhookReceiver) -> None:
    # The status page, and status changes sent to a webhook: both must show reasons, never secrets.
    environ.update(
        {
            "TOKENKEEPER_OPERATOR_PASSWORD": "ops-pw",
            "TOKENKEEPER_WEBHOOK_URL": receiver.url,
            "TOKENKEEPER_WEBHOOK_SECRET": "hook-secret",
        }
    )


def test_planted_secrets_are_found_nowhere(
    ops_env: None,
    receiver: WebhookReceiver,
    token_server: TokenServer,
    start_processes,
    celery_client,
    web: Gunicorn,
    redis_url: str,
    redis_client: redis.Redis,
    redis_data_dir: Path,
) -> None:
    """Create, refresh, authorize, callback, and failures; then search everything that was written or shown,
    Redis's AOF and RDB files included."""
    token_server.clients.update({"cc-client": CC_SECRET, "rt-client": RT_SECRET, "ac-client": AC_SECRET})
    worker = start_processes("worker")
    beat = start_processes("beat")
    first_refresh_token = token_server.new_refresh_token("rt-client")
    shown: list[str] = []
    with EventLog(celery_client) as events:
        call(
            celery_client,
            "tokenkeeper.create_integration",
            cc_spec(token_server, "cc", client_id="cc-client", client_secret=CC_SECRET),
            timeout=20,
        )
        call(
            celery_client,
            "tokenkeeper.create_integration",
            {
                **rt_spec(token_server, "rt", client_id="rt-client", client_secret=RT_SECRET),
                "refresh_token": first_refresh_token,
            },
            timeout=20,
        )
        created = call(
            celery_client,
            "tokenkeeper.create_integration",
            {
                "name": "ac",
                "grant_type": "authorization_code",
                "client_id": "ac-client",
                "client_secret": AC_SECRET,
                "token_url": token_server.url,
                "auth_url": "https://idp.example/auth?access_type=offline",
            },
            timeout=20,
        )

        status, headers, body = fetch(created["authorization_url"])
        assert status == 302
        location = headers["Location"]
        shown += [location, body, repr(headers)]
        state = dict(parse_qsl(urlsplit(location).query))["state"]
        # The callback completes only in the browser that started: send back the cookie it was given.
        cookie = headers["Set-Cookie"].split(";")[0]
        status, headers, body = fetch(f"{web.url}/oauth/callback?state={state}&code={CODE}", cookie)
        assert status == 200 and "Connected" in body
        shown += [body, repr(headers)]
        replay = fetch(f"{web.url}/oauth/callback?state={state}&code={CODE}", cookie)
        shown += [replay[2]]

        call(celery_client, "tokenkeeper.refresh_integration", "rt", timeout=20)
        # A provider that quotes our secret back in its error; and a wrong secret on update.
        token_server.queue(
            Canned(
                400,
                f'{{"error": "invalid_client", "error_description": "bad {CC_SECRET}"}}'.encode(),
                {"Content-Type": "application/json"},
            )
        )
        failures = [
            send(celery_client, "tokenkeeper.refresh_integration", "cc"),
            send(celery_client, "tokenkeeper.update_integration", "rt", {"client_secret": WRONG_SECRET}),
        ]
        for result in failures:
            try:
                shown.append(repr(result.get(timeout=20, propagate=False)))
            finally:
                shown.append(str(result.traceback))
        wait_until(lambda: token_server.count("refresh_token") >= 4, 30, "scheduled refreshes")
    shown.append(fetch_authorized(f"{web.url}/status"))
    shown.append(fetch_authorized(f"{web.url}/metrics", table=False))
    # created x3, ac authorized, cc needs_reauth: at least five status changes went to the webhook.
    webhook = receiver.take(5, timeout=30)
    shown += [delivery.body.decode() + repr(delivery.headers) for delivery in webhook]
    code_verifier = next(body["code_verifier"] for body in token_server.bodies if body.get("code") == CODE)

    refresh_tokens = [first_refresh_token, *token_server.live_refresh, *token_server.spent_refresh]
    access_tokens = list(token_server.access)
    never_anywhere = [CC_SECRET, RT_SECRET, AC_SECRET, WRONG_SECRET, CODE, code_verifier, *refresh_tokens]
    places = {
        "worker log": worker.output(),
        "beat log": beat.output(),
        "gunicorn log": web.output(),
        "task events": repr(events.events),
        "pages, headers, results, tracebacks": "\n".join(shown),
    }
    stored = all_redis_text(redis_url)
    for secret in never_anywhere:
        for place, text in {**places, "redis": stored}.items():
            assert secret not in text, f"a planted secret is in the {place}"
    on_disk = disk_text(redis_data_dir, redis_client)
    for secret in never_anywhere:
        assert not any(form in on_disk for form in spellings(secret)), "a planted secret is in Redis's files"
    for token in access_tokens:
        for place, text in places.items():
            assert token not in text, f"an access token is in the {place}"
    # The one plain access token per integration lives in its consumer hash, nowhere else in Redis.
    consumer = {name: redis_client.hget(f"tokenkeeper:token:{name}", "access_token") for name in ("cc", "rt", "ac")}
    for token in access_tokens:
        assert stored.count(token) == (1 if token in consumer.values() else 0)


def test_a_queued_creation_shows_a_broker_reader_only_sealed_boxes(
    token_server: TokenServer,
    celery_client: Celery,
    redis_client: redis.Redis,
    process_env: dict[str, str],
    settings: Settings,
    redis_url: str,
) -> None:
    """With no worker to take them, tasks sent by the producer helper and the CLI sit in Redis holding no secret."""
    send(
        celery_client,
        "tokenkeeper.create_integration",
        rt_spec(token_server, "helper", client_secret=CC_SECRET, refresh_token=RT_SECRET),
    )
    send(celery_client, "tokenkeeper.update_integration", "helper", {"client_secret": WRONG_SECRET})
    for _raw, body in broker_messages(redis_client, settings.queue):
        assert CC_SECRET not in body and RT_SECRET not in body and WRONG_SECRET not in body, body
    # A CLI without the secret key seals to the public key pinned in TOKENKEEPER_PUBLIC_KEY.
    no_key = {key: value for key, value in process_env.items() if key != "TOKENKEEPER_SECRET_KEY"}
    no_key["TOKENKEEPER_PUBLIC_KEY"] = public_key_for(settings.secret_keys)
    spec = {
        "name": "ac",
        "grant_type": "authorization_code",
        "client_id": "ac-client",
        "client_secret": AC_SECRET,
        "token_url": token_server.url,
        "auth_url": "https://idp.example/auth",
    }
    result = cli(no_key, "create", "-", "--timeout", "1", stdin=json.dumps(spec))
    assert result.returncode == 1 and "no worker answered" in result.stderr
    messages = broker_messages(redis_client, settings.queue)
    assert len(messages) == 3
    for raw, body in messages:
        for secret in (CC_SECRET, RT_SECRET, WRONG_SECRET, AC_SECRET):
            assert secret not in raw and secret not in body, "a secret is readable in the broker"
        assert '{"sealed": "' in body
    stored = all_redis_text(redis_url)
    for secret in (CC_SECRET, RT_SECRET, WRONG_SECRET, AC_SECRET):
        assert secret not in stored


def test_plain_secrets_from_a_foreign_producer_are_refused_unless_the_operator_accepts_them(
    token_server: TokenServer,
    start_processes,
    celery_client: Celery,
    redis_client: redis.Redis,
    process_env: dict[str, str],
) -> None:
    """A plain secret sent raw is refused naming the field and how to seal, storing nothing; the opt-in accepts it."""
    worker = start_processes("worker")
    spec = cc_spec(token_server, "plain")
    with pytest.raises(Exception, match="client_secret") as caught:
        celery_client.send_task("tokenkeeper.create_integration", args=[spec]).get(timeout=20)
    assert "tokenkeeper seal" in str(caught.value) and "crypto_box_seal" in str(caught.value)
    assert redis_client.keys("tokenkeeper:*") == []
    call(celery_client, "tokenkeeper.create_integration", cc_spec(token_server, "svc"), timeout=20)
    before = redis_client.hgetall("tokenkeeper:integration:svc")
    with pytest.raises(Exception, match="client_secret: is plain text"):
        celery_client.send_task("tokenkeeper.update_integration", args=["svc", {"client_secret": "client-secret"}]).get(
            timeout=20
        )
    assert redis_client.hgetall("tokenkeeper:integration:svc") == before
    worker.stop()
    process_env["TOKENKEEPER_ACCEPT_PLAIN_SECRETS"] = "true"
    start_processes("worker")
    created = celery_client.send_task("tokenkeeper.create_integration", args=[spec]).get(timeout=20)
    assert created["status"] == "active"


def test_a_box_sealed_to_another_key_is_refused(
    token_server: TokenServer, settings: Settings, redis_client: redis.Redis
) -> None:
    """A box this service's keys cannot open is refused naming the field, and nothing is stored."""
    strict = build_runtime(dataclasses.replace(settings, accept_plain_secrets=False))
    stranger = Sealer(public_key_for([Fernet.generate_key().decode()]))
    spec = {**cc_spec(token_server, "svc"), "client_secret": stranger.seal("client-secret")}
    with pytest.raises(SpecError, match=r"client_secret: the sealed box does not open .*sealed to another key"):
        Registry(strict).create(spec)
    assert redis_client.keys("tokenkeeper:*") == []
    Registry(strict).create(
        {**spec, "client_secret": Sealer(public_key_for(settings.secret_keys)).seal("client-secret")}
    )
    with pytest.raises(SpecError, match="client_secret: the sealed box does not open"):
        Registry(strict).update("svc", {"client_secret": stranger.seal("client-secret")})


def test_boxes_sealed_to_the_previous_key_open_while_it_is_listed(
    token_server: TokenServer, settings: Settings, secret_key: str, redis_client: redis.Redis
) -> None:
    """After rotation (new key first, old listed) an old box opens; with the old key removed it does not."""
    old_box = Sealer(public_key_for([secret_key])).seal("client-secret")
    new_key = Fernet.generate_key().decode()
    assert public_key_for([new_key, secret_key]) != public_key_for([secret_key])
    rotated = build_runtime(dataclasses.replace(settings, secret_keys=(new_key, secret_key)))
    created = Registry(rotated).create({**cc_spec(token_server, "svc"), "client_secret": old_box})
    assert created["status"] == "active"
    dropped = build_runtime(dataclasses.replace(settings, secret_keys=(new_key,)))
    with pytest.raises(SpecError, match="client_secret: the sealed box does not open"):
        Registry(dropped).create({**cc_spec(token_server, "svc2"), "client_secret": old_box})
    assert redis_client.exists("tokenkeeper:integration:svc2") == 0
