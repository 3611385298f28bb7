"""The callback app's consent flow with a real worker and token server, request by request."""

from __future__ import annotations

import base64
import hashlib
import time
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from flask.testing import FlaskClient

from tests.support.processes import wait_until
from tests.support.token_server import Canned, TokenServer
from workers.engine.links import link_token
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


def ac_spec(server: TokenServer, **extra: object) -> dict[str, object]:
    return {
        "name": "drive",
        "grant_type": "authorization_code",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "token_url": server.url,
        "auth_url": "https://idp.example/auth",
        **extra,
    }


def authorize_path(client: FlaskClient, name: str = "drive") -> str:
    """``/oauth/authorize/<name>?t=…`` with a fresh operator link."""
    settings = client.application.extensions["tokenkeeper"]["settings"]
    return f"/oauth/authorize/{name}?t={link_token(settings, name, now=time.time())}"


def begin(client: FlaskClient, name: str = "drive") -> dict[str, str]:
    response = client.get(authorize_path(client, name))
    assert response.status_code == 302
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))


def test_the_redirect_merges_the_query_and_carries_state_and_pkce(runtime, client, token_server, settings) -> None:
    """auth_url's own query stays once, our parameters are added, state is long and one-time, PKCE is S256."""
    Registry(runtime).create(
        ac_spec(
            token_server,
            auth_url="https://idp.example/auth?access_type=offline&x=1",
            extra_auth_params={"access_type": "offline", "prompt": "consent"},
            scopes=["openid", "email"],
        )
    )
    location = client.get(authorize_path(client)).headers["Location"]
    parts = urlsplit(location)
    query = parse_qs(parts.query)
    assert parts.netloc == "idp.example" and parts.path == "/auth"
    assert {key: len(values) for key, values in query.items()} == dict.fromkeys(query, 1)
    assert query["access_type"] == ["offline"] and query["x"] == ["1"] and query["prompt"] == ["consent"]
    assert query["response_type"] == ["code"] and query["client_id"] == ["client-id"]
    assert query["redirect_uri"] == [settings.callback_url] and query["scope"] == ["openid email"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(base64.urlsafe_b64decode(query["state"][0] + "==")) >= 16
    assert "client-secret" not in location
    second = begin(client)
    assert second["state"] != query["state"][0]


def test_unknown_expired_and_replayed_states_are_refused(
    runtime, client, token_server, redis_client, start_processes
) -> None:
    """Each gets a clear 400 page and changes nothing; a state works exactly once."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    assert client.get("/oauth/callback?code=abc").status_code == 400
    client.set_cookie("tk_oauth", "b" * 43)  # this browser's binding, as /oauth/authorize would set it
    unknown = client.get("/oauth/callback?state=made-up&code=abc")
    assert unknown.status_code == 400 and b"unknown, expired or was already used" in unknown.data

    expiring = begin(client)
    key = next(iter(redis_client.scan_iter("tokenkeeper:state:*")))
    assert 0 < redis_client.ttl(key) <= 600
    redis_client.pexpire(key, 1)
    wait_until(lambda: not redis_client.exists(key), 5, "the state to expire")
    assert client.get(f"/oauth/callback?state={expiring['state']}&code=abc").status_code == 400

    params = begin(client)
    first = client.get(f"/oauth/callback?state={params['state']}&code=good-code")
    assert first.status_code == 200 and b"Connected" in first.data
    token_before = redis_client.hgetall("tokenkeeper:token:drive")
    replay = client.get(f"/oauth/callback?state={params['state']}&code=good-code")
    assert replay.status_code == 400
    assert redis_client.hgetall("tokenkeeper:token:drive") == token_before
    assert token_server.count("authorization_code") == 1


def test_provider_errors_and_a_wrong_issuer_are_shown_and_change_nothing(
    runtime, client, token_server, redis_client
) -> None:
    """error=access_denied and other codes are explained in our words (the provider's text only in the
    history); an iss from elsewhere is refused (RFC 9207)."""
    Registry(runtime).create(ac_spec(token_server))
    denied = client.get(
        f"/oauth/callback?state={begin(client)['state']}&error=access_denied&error_description=User+said+no"
    )
    assert denied.status_code == 400 and b"declined" in denied.data and b"User said no" not in denied.data
    odd = client.get(f"/oauth/callback?state={begin(client)['state']}&error=weird_thing")
    assert odd.status_code == 400 and b"weird_thing" not in odd.data and b"status history" in odd.data
    reasons = " ".join(entry["reason"] for entry in runtime.store.history("drive"))
    assert "User said no" in reasons and "weird_thing" in reasons
    wrong_iss = client.get(f"/oauth/callback?state={begin(client)['state']}&code=c&iss=https://evil.example")
    assert wrong_iss.status_code == 400 and b"RFC 9207" in wrong_iss.data
    assert redis_client.hget("tokenkeeper:token:drive", "status") == "pending_authorization"
    assert token_server.count("authorization_code") == 0


def test_with_an_issuer_the_iss_must_match_exactly(runtime, client, token_server, redis_client) -> None:
    """A spec with ``issuer``: a same-origin but different iss is refused (RFC 9207 §2.4)."""
    Registry(runtime).create(ac_spec(token_server, issuer="https://idp.example/tenant-a"))
    other_tenant = client.get(f"/oauth/callback?state={begin(client)['state']}&code=c&iss=https://idp.example/tenant-b")
    assert other_tenant.status_code == 400 and b"RFC 9207" in other_tenant.data
    assert redis_client.hget("tokenkeeper:token:drive", "status") == "pending_authorization"
    assert token_server.count("authorization_code") == 0


def test_a_failed_exchange_shows_the_providers_error(
    runtime, client, token_server, redis_client, start_processes
) -> None:
    """invalid_grant from the token endpoint: a 400 page naming it (its description only in the history);
    the code is not retried."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    token_server.queue(Canned(400, b'{"error": "invalid_grant", "error_description": "code expired"}', JSON))
    params = begin(client)
    page = client.get(f"/oauth/callback?state={params['state']}&code=the-code-123&iss=https://idp.example")
    assert page.status_code == 400 and b"invalid_grant" in page.data and b"code expired" not in page.data
    assert any("code expired" in entry["reason"] for entry in runtime.store.history("drive"))
    assert b"the-code-123" not in page.data
    assert len(token_server.bodies) == 1
    assert redis_client.hget("tokenkeeper:token:drive", "status") == "pending_authorization"


def test_no_refresh_token_is_explained(runtime, client, token_server, redis_client, start_processes) -> None:
    """A provider that issues no refresh token: non-expiring is said so; expiring asks for offline access."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    token_server.queue(Canned(200, b'{"access_token": "forever-token", "token_type": "bearer"}', JSON))
    page = client.get(f"/oauth/callback?state={begin(client)['state']}&code=c1")
    assert page.status_code == 200 and b"does not expire" in page.data and b"never" in page.data
    assert redis_client.zscore("tokenkeeper:schedule", "drive") is None
    assert redis_client.hget("tokenkeeper:token:drive", "access_token") == "forever-token"

    Registry(runtime).create(ac_spec(token_server, name="short"))
    token_server.queue(Canned(200, b'{"access_token": "t", "token_type": "bearer", "expires_in": 60}', JSON))
    page = client.get(f"/oauth/callback?state={begin(client, 'short')['state']}&code=c2")
    assert page.status_code == 200 and b"access_type=offline" in page.data
    assert "forever-token" not in page.data.decode()


@pytest.mark.parametrize("pkce", [True, False])
def test_pkce_on_and_off(runtime, client, token_server, start_processes, pkce: bool) -> None:
    """With PKCE the verifier sent matches the challenge; without it neither is sent."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server, pkce=pkce))
    params = begin(client)
    assert ("code_challenge" in params) is pkce
    assert client.get(f"/oauth/callback?state={params['state']}&code=c").status_code == 200
    sent = token_server.bodies[-1]
    assert sent["grant_type"] == "authorization_code" and sent["redirect_uri"] == runtime.settings.callback_url
    if pkce:
        digest = hashlib.sha256(sent["code_verifier"].encode()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == params["code_challenge"]
    else:
        assert "code_verifier" not in sent


def test_a_needs_reauth_integration_is_authorized_again(
    runtime, client, token_server, redis_client, start_processes
) -> None:
    """After invalid_grant, the same link brings it back to active with a new refresh token."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    assert client.get(f"/oauth/callback?state={begin(client)['state']}&code=c1").status_code == 200
    token_server.live_refresh.clear()
    assert Refresher(runtime).refresh("drive").status == "needs_reauth"
    assert client.get(f"/oauth/callback?state={begin(client)['state']}&code=c2").status_code == 200
    assert redis_client.hget("tokenkeeper:token:drive", "status") == "active"
    assert Refresher(runtime).refresh("drive").outcome == "refreshed"
    statuses = [entry["status"] for entry in runtime.store.history("drive")]
    assert statuses[:3] == ["active", "needs_reauth", "active"]


def test_pages_carry_security_headers_and_no_secrets(runtime, client, token_server) -> None:
    """Every page: strict CSP, no referrer, nosniff; a 404 is a page of ours, not a stack trace."""
    Registry(runtime).create(ac_spec(token_server))
    for response in (
        client.get(authorize_path(client)),
        client.get(authorize_path(client, "ghost")),
        client.get("/oauth/callback?state=x"),
        client.get("/nope"),
        client.get("/healthz"),
    ):
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert b"client-secret" not in response.data and b"Traceback" not in response.data
    assert client.get(authorize_path(client, "ghost")).status_code == 404
    assert client.get("/nope").status_code == 404


def test_an_authorized_integration_can_be_updated_and_keeps_its_refresh_token(
    runtime, client, token_server, start_processes
) -> None:
    """The refresh token the consent gave is grant state: an update of the spec keeps it, and refreshing goes on."""
    start_processes("worker")
    Registry(runtime).create(ac_spec(token_server))
    assert client.get(f"/oauth/callback?state={begin(client)['state']}&code=c1").status_code == 200
    assert Registry(runtime).update("drive", {"scopes": "read write"})["status"] == "active"
    assert Refresher(runtime).refresh("drive").outcome == "refreshed"
    assert token_server.bodies[-1]["grant_type"] == "refresh_token"
