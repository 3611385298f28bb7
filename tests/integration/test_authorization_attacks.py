"""An attacker against the consent flow: no link, someone else's state, floods, planted text, broken secrets.

Each test plays the attacker against the callback app (Flask test client, real Redis, real token
server, a real worker where a code could be exchanged) and checks that Redis and the provider saw
nothing of it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from cryptography.fernet import Fernet
from flask.testing import FlaskClient

from tests.support.token_server import Canned, TokenServer
from workers.engine.registry import Registry

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
COOKIE = "tk_oauth"
ATTACKER_TEXT = "Your account is locked - call +1-555-0100 or visit https://evil.example/fix"


@pytest.fixture
def victim(make_client) -> FlaskClient:
    """The victim's browser."""
    return make_client()


@pytest.fixture
def stranger(make_client) -> FlaskClient:
    """Another browser, the attacker's."""
    return make_client()


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def snapshot(client: redis.Redis) -> tuple[int, dict[bytes, bytes | None]]:
    """Every key and its serialized value (DUMP), and how many there are: any write shows up as a difference.

    Kombu's own bookkeeping (``_kombu.*``, rewritten by a running worker on its timer) is left out: it is
    not ours and changes whatever a request does.
    """
    keys = [key for key in client.scan_iter(count=1000) if not key.startswith(b"_kombu.")]
    return len(keys), {key: client.dump(key) for key in keys}


def ac_spec(server: TokenServer, name: str = "drive", **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "grant_type": "authorization_code",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "token_url": server.url,
        "auth_url": "https://idp.example/auth",
        **extra,
    }


def link(settings, name: str = "drive", **options: object) -> str:
    from workers.engine.links import link_token

    return link_token(settings, name, now=time.time(), **options)  # type: ignore[arg-type]


def begin(client: FlaskClient, token: str, name: str = "drive") -> dict[str, str]:
    response = client.get(f"/oauth/authorize/{name}", query_string={"t": token})
    assert response.status_code == 302, response.data[:300]
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))


def id_token(sub: str, audience: str = "client-id", **claims: object) -> str:
    """An unsigned-looking JWT whose payload names the account (only the payload is read)."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    payload = {"iss": "https://idp.example", "sub": sub, "aud": audience, "exp": int(time.time()) + 600, **claims}
    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2lnbmF0dXJl"


def test_a_stranger_without_a_valid_link_gets_403_and_redis_is_untouched(
    settings,
    runtime,
    stranger: FlaskClient,
    token_server: TokenServer,
    raw_redis: redis.Redis,
) -> None:
    """No link, junk, a forged signature, another integration's link, an expired one: 403, no write at all."""
    from workers.engine.links import link_token

    Registry(runtime).create(ac_spec(token_server))
    Registry(runtime).create(ac_spec(token_server, name="other"))
    forged = link_token(settings.__class__(secret_keys=(Fernet.generate_key().decode(),)), "drive", now=time.time())
    genuine = link(settings)
    payload, _, signature = genuine.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered_claims = {**claims, "e": claims["e"] + 10**7}
    tampered = base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=").decode() + "." + signature
    attempts = {
        "no link": None,
        "empty": "",
        "junk": "not-a-link",
        "forged": forged,
        "tampered": tampered,
        "other name": link(settings, "other"),
        "expired": link_token(settings, "drive", now=time.time() - 90000),
        "overlong": "a" * 5000,
    }
    before = snapshot(raw_redis)
    for what, token in attempts.items():
        query = {} if token is None else {"t": token}
        response = stranger.get("/oauth/authorize/drive", query_string=query)
        assert response.status_code == 403, (what, response.status_code)
        assert "Location" not in response.headers and "Set-Cookie" not in response.headers, what
        assert snapshot(raw_redis) == before, f"{what}: Redis changed"
    assert token_server.bodies == []


def test_a_spent_link_gets_403_and_writes_nothing(
    settings,
    runtime,
    victim: FlaskClient,
    stranger: FlaskClient,
    token_server: TokenServer,
    raw_redis: redis.Redis,
    start_processes,
) -> None:
    """Once a flow through a link succeeded, the link is spent: the next visitor gets 403 and no state."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    token = link(settings)
    state = begin(victim, token)["state"]
    assert victim.get("/oauth/callback", query_string={"state": state, "code": "c1"}).status_code == 200
    before = snapshot(raw_redis)
    for client in (stranger, victim):
        response = client.get("/oauth/authorize/drive", query_string={"t": token})
        assert response.status_code == 403 and b"already used" in response.data
        assert snapshot(raw_redis) == before
    assert token_server.count("authorization_code") == 1


def test_a_state_used_from_another_browser_is_refused_and_changes_nothing(
    settings,
    runtime,
    victim: FlaskClient,
    stranger: FlaskClient,
    make_client,
    token_server: TokenServer,
    raw_redis: redis.Redis,
    start_processes,
) -> None:
    """A victim's state replayed with no cookie or another cookie: 400, no write, no token request;
    the victim's own callback still works afterwards."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    state = begin(victim, link(settings))["state"]
    before = snapshot(raw_redis)
    no_cookie = stranger.get("/oauth/callback", query_string={"state": state, "code": "attacker-code"})
    assert no_cookie.status_code == 400, no_cookie.data[:300]
    assert b"this browser" in no_cookie.data
    other = make_client()
    other.set_cookie(COOKIE, "attacker-chosen-binding-value-0123456789abcdef")
    other_cookie = other.get("/oauth/callback", query_string={"state": state, "code": "attacker-code"})
    assert other_cookie.status_code == 400
    assert snapshot(raw_redis) == before
    assert token_server.bodies == []
    assert runtime.store.token("drive")["status"] == "pending_authorization"
    mine = victim.get("/oauth/callback", query_string={"state": state, "code": "victim-code"})
    assert mine.status_code == 200 and b"Connected" in mine.data
    assert [body["code"] for body in token_server.bodies] == ["victim-code"]


def test_a_flood_of_bogus_callbacks_reaches_no_provider_and_writes_nothing(
    settings,
    runtime,
    make_client,
    token_server: TokenServer,
    raw_redis: redis.Redis,
    start_processes,
) -> None:
    """200 rounds of authorize-without-link plus callbacks with made-up codes: no token request, no write."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    attacker = make_client()
    before = snapshot(raw_redis)
    for number in range(200):
        started = attacker.get("/oauth/authorize/drive")
        location = started.headers.get("Location", "")
        state = dict(parse_qsl(urlsplit(location).query)).get("state") or f"made-up-{number}"
        if number % 2:
            attacker.set_cookie(COOKIE, f"made-up-binding-{number:04d}-0123456789abcdef")
        response = attacker.get("/oauth/callback", query_string={"state": state, "code": f"bogus-{number}"})
        assert response.status_code in (400, 403), (number, response.status_code)
    assert token_server.bodies == [], f"{len(token_server.bodies)} token requests were made"
    assert snapshot(raw_redis) == before


def test_outstanding_states_per_link_are_bounded(
    settings,
    runtime,
    victim: FlaskClient,
    token_server: TokenServer,
    redis_client: redis.Redis,
) -> None:
    """Even a valid link cannot fill Redis: after a few outstanding states the next visit gets 429."""
    from workers.engine.authorization import MAX_STATES_PER_LINK

    Registry(runtime).create(ac_spec(token_server))
    token = link(settings)
    answers = [victim.get("/oauth/authorize/drive", query_string={"t": token}).status_code for _ in range(30)]
    assert answers == [302] * MAX_STATES_PER_LINK + [429] * (30 - MAX_STATES_PER_LINK)
    assert len(list(redis_client.scan_iter("tokenkeeper:state:*"))) == MAX_STATES_PER_LINK
    # The integration's own four keys, the operators' index (names, sizes, its cell), the service's digest key
    # (plan / apply), the states and their set.
    assert len(list(redis_client.scan_iter("tokenkeeper:*"))) <= 4 + 3 + 1 + MAX_STATES_PER_LINK + 1


def test_provider_text_stays_off_the_page_and_goes_to_the_history(
    settings,
    runtime,
    victim: FlaskClient,
    token_server: TokenServer,
    start_processes,
) -> None:
    """error_description from the authorization or the token endpoint is not shown; operators see it in history."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    state = begin(victim, link(settings))["state"]
    denied = victim.get(
        "/oauth/callback",
        query_string={
            "state": state,
            "error": "access_denied",
            "error_description": ATTACKER_TEXT,
            "error_uri": "https://evil.example/help",
        },
    )
    assert denied.status_code == 400 and b"declined" in denied.data
    assert b"evil.example" not in denied.data and b"555" not in denied.data
    odd = victim.get(
        "/oauth/callback", query_string={"state": begin(victim, link(settings))["state"], "error": "call_555_0100_now"}
    )
    assert odd.status_code == 400 and b"555" not in odd.data

    token_server.queue(
        Canned(400, json.dumps({"error": "invalid_grant", "error_description": ATTACKER_TEXT}).encode(), JSON)
    )
    failed = victim.get("/oauth/callback", query_string={"state": begin(victim, link(settings))["state"], "code": "c"})
    assert failed.status_code == 400 and b"invalid_grant" in failed.data
    assert b"evil.example" not in failed.data and b"555" not in failed.data
    reasons = [entry["reason"] for entry in runtime.store.history("drive")]
    assert sum(ATTACKER_TEXT in reason for reason in reasons) == 2, reasons
    assert any("call_555_0100_now" in reason for reason in reasons)
    assert runtime.store.token("drive")["status"] == "pending_authorization"


def test_authorize_does_not_decrypt_secrets(
    settings,
    runtime,
    victim: FlaskClient,
    token_server: TokenServer,
    redis_client: redis.Redis,
) -> None:
    """With the stored secrets corrupted (undecryptable), /oauth/authorize still redirects to the provider."""
    Registry(runtime).create(ac_spec(token_server))
    redis_client.hset("tokenkeeper:integration:drive", "secrets", "gAAAAAcorrupted-not-a-fernet-token")
    params = begin(victim, link(settings))
    assert params["client_id"] == "client-id" and params["state"]


def test_the_binding_cookie_is_httponly_lax_and_host_prefixed_under_https(
    settings,
    runtime,
    make_client,
    token_server: TokenServer,
) -> None:
    """Set-Cookie: HttpOnly, SameSite=Lax, Path=/; with an https public URL also __Host- and Secure."""
    import dataclasses

    Registry(runtime).create(ac_spec(token_server))
    for public_url, name, secure in (
        (settings.public_url, COOKIE, False),
        ("https://tokens.example", "__Host-" + COOKIE, True),
    ):
        changed = dataclasses.replace(settings, public_url=public_url)
        client = make_client(changed)
        response = client.get("/oauth/authorize/drive", query_string={"t": link(changed)})
        assert response.status_code == 302
        cookie = response.headers["Set-Cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert cookie.startswith(name + "=") and "httponly" in attributes and "path" in attributes
        assert "samesite=lax" in cookie.lower() and ("secure" in attributes) is secure


def test_a_different_account_is_refused_and_its_tokens_revoked(
    settings,
    runtime,
    victim: FlaskClient,
    token_server: TokenServer,
    start_processes,
) -> None:
    """Connected as alice; a re-authorization that comes back as mallory is refused, revoked, not stored;
    with a --new-account link it is accepted."""
    start_processes("worker")
    Registry(runtime).create(
        ac_spec(token_server, revocation_url=token_server.revocation_url, scopes=["openid", "email"])
    )

    def answer(sub: str, access: str) -> Canned:
        return Canned(
            200,
            json.dumps(
                {
                    "access_token": access,
                    "token_type": "bearer",
                    "expires_in": 300,
                    "refresh_token": f"rt-{access}",
                    "scope": "openid email",
                    "id_token": id_token(sub, email=f"{sub}@example.com"),
                }
            ).encode(),
            JSON,
        )

    token_server.queue(answer("alice", "at-alice"))
    assert (
        victim.get(
            "/oauth/callback", query_string={"state": begin(victim, link(settings))["state"], "code": "c1"}
        ).status_code
        == 200
    )
    assert runtime.store.load("drive").account["sub"] == "alice"

    token_server.queue(answer("mallory", "at-mallory"))
    refused = victim.get(
        "/oauth/callback", query_string={"state": begin(victim, link(settings))["state"], "code": "c2"}
    )
    assert refused.status_code == 400 and b"different account" in refused.data
    assert runtime.store.token("drive")["access_token"] == "at-alice"
    assert runtime.box.open(runtime.store.load("drive").sealed_secrets)["refresh_token"] == "rt-at-alice"
    assert {token for _, token in token_server.revoked} == {"at-mallory", "rt-at-mallory"}
    assert any("mallory" in entry["reason"] for entry in runtime.store.history("drive"))

    token_server.queue(answer("bob", "at-bob"))
    accepted = victim.get(
        "/oauth/callback",
        query_string={"state": begin(victim, link(settings, new_account=True))["state"], "code": "c3"},
    )
    assert accepted.status_code == 200
    assert runtime.store.token("drive")["access_token"] == "at-bob"
    assert runtime.store.load("drive").account == {
        "iss": "https://idp.example",
        "sub": "bob",
        "email": "bob@example.com",
    }
