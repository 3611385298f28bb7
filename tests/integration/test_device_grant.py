"""The device authorization grant (RFC 8628) against Authlib's server, polled by real workers and beat.

The server gives 1-second polling intervals; a test plays the person on the verification page by
approving or denying the user code, and the server can ask for slower polling.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.authorization_server import AuthorizationServerApp
from tests.support.observe import all_redis_text
from tests.support.processes import wait_until
from workers.oauth.token_client import DEVICE_CODE_GRANT
from workers.producer import call

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider() -> Iterator[AuthorizationServerApp]:
    server = AuthorizationServerApp(lifetime=4, device_interval=1, device_lifetime=60).start()
    server.register_client(client_id="tv-app", auth_method="none", grant_types=(DEVICE_CODE_GRANT, "refresh_token"))
    yield server
    server.stop()


def _spec(provider: AuthorizationServerApp, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "grant_type": "device_code",
        "client_id": "tv-app",
        "device_authorization_url": f"{provider.base_url}/device_authorization",
        "token_url": provider.token_url,
        "revocation_url": f"{provider.base_url}/revoke",
        "scopes": "profile",
    }


def _status(redis_client: Any, name: str) -> str:
    return str(redis_client.hget(f"tokenkeeper:integration:{name}", "status"))


def test_a_person_approves_and_the_device_integration_lives_on(
    provider: AuthorizationServerApp, start_processes: Any, celery_client: Any, redis_client: Any, redis_url: str
) -> None:
    """Pending with a user code; polled at the interval; approved -> active; refreshed twice; revoked on delete."""
    worker = start_processes("worker")  # logs at INFO
    start_processes("beat")
    created = call(celery_client, "tokenkeeper.create_integration", _spec(provider, "tv"), timeout=20)
    assert created["status"] == "pending_authorization"
    assert created["verification_uri"] == f"{provider.base_url}/device"
    assert created["verification_uri_complete"].endswith(f"user_code={created['user_code']}")
    assert redis_client.hget("tokenkeeper:token:tv", "status") == "pending_authorization"

    wait_until(lambda: len(provider.state.device_polls) >= 3, 20, "three polls while the person is away", 0.1)
    provider.answer_device(created["user_code"], approve=True)
    wait_until(lambda: _status(redis_client, "tv") == "active", 20, "the poll after approval", 0.1)
    token = redis_client.hgetall("tokenkeeper:token:tv")
    assert token["status"] == "active" and provider.is_valid(token["access_token"])
    polls = provider.state.device_polls
    # RFC 8628 §3.5: never faster than the interval the server gave (a little slack for clock reads).
    assert min(later - earlier for earlier, later in itertools.pairwise(polls)) >= 0.9
    history = [entry["status"] for entry in _history(redis_client, "tv")]
    assert history == ["active", "pending_authorization"]  # the polls in between changed no status

    wait_until(lambda: provider.state.refreshes >= 2, 30, "two refreshes after authorization", 0.2)
    # This server retires a token with the refresh token that made it, so a refresh under way can leave the
    # stored one retired for the moment until its answer is written.
    wait_until(
        lambda: provider.is_valid(redis_client.hget("tokenkeeper:token:tv", "access_token")), 5, "a live token", 0.05
    )
    assert redis_client.hget("tokenkeeper:token:tv", "access_token") != token["access_token"]
    assert provider.state.reused == []

    # The device code is a secret: sealed in Redis, never in the worker's log or a result.
    (device_code,) = provider.state.devices
    assert device_code not in worker.output() and device_code not in all_redis_text(redis_url)
    assert device_code not in json.dumps(created)

    deleted = call(celery_client, "tokenkeeper.delete_integration", "tv", timeout=20)
    assert deleted["revoked"] == ["refresh_token", "access_token"], deleted


def _history(redis_client: Any, name: str) -> list[dict[str, Any]]:
    return [json.loads(entry) for entry in redis_client.lrange(f"tokenkeeper:history:{name}", 0, -1)]


def test_slow_down_then_a_denial_stops_polling_with_a_clear_reason(
    provider: AuthorizationServerApp, start_processes: Any, celery_client: Any, redis_client: Any
) -> None:
    """slow_down adds 5 s to the interval; access_denied ends in needs_reauth saying so, and polling stops."""
    provider.state.slow_downs = 1
    start_processes("worker")
    start_processes("beat")
    created = call(celery_client, "tokenkeeper.create_integration", _spec(provider, "tv2"), timeout=20)
    wait_until(lambda: len(provider.state.device_polls) >= 2, 20, "the poll after slow_down", 0.1)
    first, second = provider.state.device_polls[:2]
    assert second - first >= 5.9  # 1 s + 5 s
    provider.answer_device(created["user_code"], approve=False)
    wait_until(lambda: _status(redis_client, "tv2") == "needs_reauth", 20, "the denial", 0.1)
    reason = redis_client.hget("tokenkeeper:integration:tv2", "reason")
    assert "access_denied" in reason and "denied" in reason
    polls = len(provider.state.device_polls)
    assert redis_client.zscore("tokenkeeper:schedule", "tv2") is None
    assert len(provider.state.device_polls) == polls


def test_an_expired_code_ends_waiting_and_an_update_starts_over(
    start_processes: Any, celery_client: Any, redis_client: Any
) -> None:
    """No one enters the code in time: needs_reauth (expired); an update asks for a new code."""
    provider = AuthorizationServerApp(lifetime=4, device_interval=1, device_lifetime=3).start()
    try:
        provider.register_client(client_id="tv-app", auth_method="none", grant_types=(DEVICE_CODE_GRANT,))
        start_processes("worker")
        start_processes("beat")
        created = call(celery_client, "tokenkeeper.create_integration", _spec(provider, "tv3"), timeout=20)
        wait_until(lambda: _status(redis_client, "tv3") == "needs_reauth", 20, "the code to expire", 0.1)
        assert "expired" in redis_client.hget("tokenkeeper:integration:tv3", "reason")
        again = call(celery_client, "tokenkeeper.update_integration", "tv3", {}, timeout=20)
        assert again["status"] == "pending_authorization" and again["user_code"] != created["user_code"]
        provider.answer_device(again["user_code"], approve=True)
        wait_until(lambda: _status(redis_client, "tv3") == "active", 20, "the new code's approval", 0.1)
    finally:
        provider.stop()


def test_a_token_that_never_expires_and_cannot_be_renewed_is_left_alone(
    start_processes: Any, celery_client: Any, redis_client: Any
) -> None:
    """A GitHub OAuth App's answer (no refresh token, no expires_in): active, and nothing is ever scheduled."""
    provider = AuthorizationServerApp(lifetime=4, device_interval=1, lifetimes={DEVICE_CODE_GRANT: 0}).start()
    try:
        provider.register_client(client_id="tv-app", auth_method="none", grant_types=(DEVICE_CODE_GRANT,))
        start_processes("worker")
        start_processes("beat")
        created = call(celery_client, "tokenkeeper.create_integration", _spec(provider, "forever"), timeout=20)
        provider.answer_device(created["user_code"], approve=True)
        wait_until(lambda: _status(redis_client, "forever") == "active", 20, "the approval", 0.1)
        assert redis_client.hget("tokenkeeper:token:forever", "expires_at") == ""
        assert redis_client.zscore("tokenkeeper:schedule", "forever") is None
        assert "does not expire" in redis_client.hget("tokenkeeper:integration:forever", "reason")
    finally:
        provider.stop()
