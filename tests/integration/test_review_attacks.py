"""Attacks found open by the security review after the "trust" branches landed; each test plays the attacker."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import requests
from cryptography.fernet import Fernet
from flask.testing import FlaskClient

from config import Settings
from tests.integration.test_authorization_attacks import JSON, ac_spec, begin, id_token, link
from tests.support.observe import all_redis_text
from tests.support.token_server import Canned
from workers.celery_app import create_celery
from workers.crypto.sealing import Opener, Sealer, public_key_for
from workers.engine.registry import Registry
from workers.engine.runtime import build_runtime
from workers.engine.spec import validate_spec
from workers.errors import ConfigurationError, SpecError, TransientProviderError
from workers.oauth.addresses import AddressPolicy
from workers.oauth.token_client import TokenClient
from workers.producer import seal_arguments

PLANTED = "PLANTED-review-secret-3c9a"
LOCAL = AddressPolicy(allow_private=True)


def test_a_public_key_planted_in_redis_does_not_become_the_key_producers_seal_to(
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    """A producer without the secret key never seals to a public key another Redis login holder planted."""
    # What workers used to publish at start, for producers without the secret key to seal to.
    redis_client.set(f"{settings.key_prefix}public-key", public_key_for(settings.secret_keys))
    # Every producer logs in as `tokenkeeper`, which may SET tokenkeeper:public-key: one of them swaps in its own.
    attacker_key = Fernet.generate_key().decode()
    redis_client.set(f"{settings.key_prefix}public-key", public_key_for([attacker_key]))
    producer = create_celery(dataclasses.replace(settings, secret_keys=()))
    try:
        (sealed,) = seal_arguments(producer, "tokenkeeper.create_integration", ({"client_secret": PLANTED},))
    except ConfigurationError:
        return  # refusing to seal to an unverified key is a fix too
    # The attacker, reading the task from the broker with the same login, opens it.
    with pytest.raises(SpecError):
        Opener([attacker_key]).open_fields(sealed)


@pytest.mark.parametrize(
    ("field", "parameter"),
    [
        ("extra_token_params", "client_secret"),
        ("extra_token_params", "refresh_token"),
        ("extra_token_params", "client_assertion"),
        ("extra_token_params", "password"),
        ("extra_auth_params", "client_secret"),
    ],
)
def test_a_secret_parameter_smuggled_into_a_parameter_map_is_refused(
    field: str,
    parameter: str,
    settings: Settings,
    redis_url: str,
) -> None:
    """A secret-named parameter in extra_token_params / extra_auth_params is refused, never stored in clear."""
    strict = build_runtime(dataclasses.replace(settings, accept_plain_secrets=False))
    sealer = Sealer(public_key_for(settings.secret_keys))
    spec = {
        "name": "smuggled",
        "grant_type": "authorization_code",
        "client_id": "client-id",
        "client_secret": sealer.seal("client-secret"),
        "token_url": "http://127.0.0.1:9/token",
        "auth_url": "http://127.0.0.1:9/auth",
        field: {parameter: PLANTED},
    }
    with pytest.raises(SpecError, match=field):
        Registry(strict).create(spec)
    assert PLANTED not in all_redis_text(redis_url)


@pytest.fixture
def dripping_server() -> Iterator[str]:
    """A token endpoint that answers 200 at once, then sends its body one byte every 0.3 s for 12 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
            for _ in range(40):
                if stop.wait(0.3):
                    return
                try:
                    connection.sendall(b" ")
                except OSError:
                    return  # the client gave up: what the test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/token"
    stop.set()
    listener.close()
    thread.join(timeout=15)


def test_a_token_endpoint_dripping_its_answer_cannot_hold_a_worker_past_the_timeouts(dripping_server: str) -> None:
    """A body trickled a byte at a time ends the request within a few timeouts, not when the server chooses."""
    client = TokenClient(
        session=requests.Session(), clock=time.time, connect_timeout=1.0, read_timeout=1.0, addresses=LOCAL
    )
    spec = validate_spec(
        {
            "name": "drip",
            "grant_type": "client_credentials",
            "client_id": "client-id",
            "client_secret": "client-secret",
            "token_url": dripping_server,
        },
        addresses=LOCAL,
    )
    started = time.monotonic()
    with pytest.raises(TransientProviderError):
        client.client_credentials(spec)
    elapsed = time.monotonic() - started
    # connect 1 s + read 1 s, with room for a loaded machine; the server would go on for 12 s.
    assert elapsed < 5.0, f"the request ran {elapsed:.1f}s: only the server decided when it ended"


@pytest.fixture
def victim(make_client) -> FlaskClient:
    """The victim's browser."""
    return make_client()


@pytest.mark.e2e
def test_the_same_sub_from_another_issuer_is_not_taken_for_the_connected_account(
    settings,
    runtime,
    victim,
    token_server,
    start_processes,
) -> None:
    """Re-authorization compares the account as (iss, sub): OpenID's sub is unique only within one issuer."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server, scopes=["openid"]))

    def answer(access: str, issuer: str) -> Canned:
        return Canned(
            200,
            json.dumps(
                {
                    "access_token": access,
                    "token_type": "bearer",
                    "expires_in": 300,
                    "id_token": id_token("1001", iss=issuer),
                }
            ).encode(),
            JSON,
        )

    token_server.queue(answer("at-tenant-a", "https://idp.example/tenant-a"))
    assert (
        victim.get(
            "/oauth/callback", query_string={"state": begin(victim, link(settings))["state"], "code": "c1"}
        ).status_code
        == 200
    )
    # A multi-tenant endpoint: another tenant's user 1001 consents through a plain (not --new-account) link.
    token_server.queue(answer("at-tenant-b", "https://idp.example/tenant-b"))
    refused = victim.get(
        "/oauth/callback", query_string={"state": begin(victim, link(settings))["state"], "code": "c2"}
    )
    assert refused.status_code == 400
    assert runtime.store.token("drive")["access_token"] == "at-tenant-a"
