"""Odd answers from a real token endpoint, through the refresher: transient stays transient, no token is lost."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import pytest
import redis

from config.settings import Settings
from tests.support.specs import rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime, build_runtime

HTML = {"Content-Type": "text/html"}
JSON = {"Content-Type": "application/json"}
YEAR = 365 * 86400


class Clock:
    """Real time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def runtime_with(settings: Settings, clock: Clock | None = None, **changes: Any) -> Runtime:
    return build_runtime(dataclasses.replace(settings, accept_plain_secrets=True, **changes), clock=clock or time.time)


def slack_error(code: str) -> Canned:
    return Canned(200, json.dumps({"ok": False, "error": code}).encode(), JSON)


@pytest.mark.parametrize("code", ["ratelimited", "internal_error", "service_unavailable", "fatal_error"])
def test_slacks_transient_codes_on_200_are_retried(code: str, runtime: Runtime, token_server: TokenServer) -> None:
    """Slack's 200 with a passing-trouble error code leaves the integration retrying, not needs_reauth."""
    Registry(runtime).create(rt_spec(token_server, "chat", provider="slack"))
    token_server.queue(slack_error(code))
    result = Refresher(runtime).refresh("chat")
    assert (result.status, code in result.detail) == ("retrying", True)


def test_a_503_carrying_invalid_request_is_retried(runtime: Runtime, token_server: TokenServer) -> None:
    """5xx is transient whatever the body says: a gateway's 503 with invalid_request does not stop refreshing."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.queue(Canned(503, b'{"error": "invalid_request"}', JSON))
    assert Refresher(runtime).refresh("user").status == "retrying"


def test_a_waf_page_is_retried_until_the_unclear_window_passes(settings: Settings, token_server: TokenServer) -> None:
    """A 403 HTML page retries for the unclear-answer window, then needs_reauth with a reason that says so."""
    clock = Clock()
    runtime = runtime_with(settings, clock, unclear_error_window=60.0)
    Registry(runtime).create(rt_spec(token_server, "user"))
    page = b"<html><body>Access denied by the firewall</body></html>"
    token_server.queue(*(Canned(403, page, HTML) for _ in range(3)))
    first = Refresher(runtime).refresh("user")
    clock.offset += 59
    second = Refresher(runtime).refresh("user")
    clock.offset += 2
    third = Refresher(runtime).refresh("user")
    assert [first.status, second.status, third.status] == ["retrying", "retrying", "needs_reauth"]
    assert "kept failing with an unclear answer for 1 min" in third.detail
    assert runtime.store.load("user").reason == third.detail


def test_a_clear_answer_restarts_the_unclear_window(settings: Settings, token_server: TokenServer) -> None:
    """A success between unclear answers starts the window afresh: only an unbroken run of them stops refreshing."""
    clock = Clock()
    runtime = runtime_with(settings, clock, unclear_error_window=60.0)
    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.queue(Canned(404, b"not here", {"Content-Type": "text/plain"}))
    assert Refresher(runtime).refresh("user").status == "retrying"
    clock.offset += 50
    assert Refresher(runtime).refresh("user").status == "active"
    token_server.queue(Canned(404, b"not here", {"Content-Type": "text/plain"}))
    clock.offset += 50
    assert Refresher(runtime).refresh("user").status == "retrying"


def test_invalid_grant_on_400_stops_at_once(runtime: Runtime, token_server: TokenServer) -> None:
    """RFC 6749 §5.2's invalid_grant on a 400 is permanent: needs_reauth on the first answer."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.queue(Canned(400, b'{"error": "invalid_grant"}', JSON))
    result = Refresher(runtime).refresh("user")
    assert result.status == "needs_reauth" and "invalid_grant" in result.detail


@pytest.mark.parametrize("expires_in", ["1e400", '"Infinity"', '"NaN"', "-5", "1" + "0" * 400, "1" + "0" * 5000])
def test_an_odd_lifetime_keeps_the_rotated_refresh_token(
    expires_in: str, runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """An absurd expires_in never loses the rotated refresh token: it is stored, used next, the expiry clamped."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    asked = token_server.count("refresh_token")
    token_server.queue(Canned(patch={"expires_in": expires_in}))
    result = Refresher(runtime).refresh("user")
    assert result.status == "active"
    expires_at = redis_client.hget("tokenkeeper:token:user", "expires_at")
    assert expires_at == "" or int(expires_at) <= time.time() + YEAR
    assert Refresher(runtime).refresh("user").status == "active"
    assert token_server.reused == [] and token_server.count("refresh_token") == asked + 2


def test_tokens_arriving_expired_are_refreshed_at_most_every_min_interval(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """expires_in 1 plans the next refresh a minimum interval on, with a reason naming the provider's short tokens."""
    server = TokenServer(lifetime=1).start()
    try:
        runtime = runtime_with(settings, min_refresh_interval=30.0)
        Registry(runtime).create(rt_spec(server, "user"))
        started = time.time()
        result = Refresher(runtime).refresh("user")
        due = redis_client.zscore("tokenkeeper:schedule", "user")
    finally:
        server.stop()
    assert result.status == "active" and due is not None and due >= started + 30
    reason = runtime.store.load("user").reason
    assert "the provider's tokens arrive already expired or nearly so: refreshing at most every 30 s" in reason


def test_a_jwt_already_past_its_exp_waits_the_min_interval(
    settings: Settings, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A JWT whose exp is already past (provider clock behind) is not refreshed again on the next tick."""
    runtime = runtime_with(settings, min_refresh_interval=30.0)
    Registry(runtime).create(rt_spec(token_server, "user"))
    claims = base64.urlsafe_b64encode(json.dumps({"exp": int(time.time()) - 600}).encode()).rstrip(b"=").decode()
    token_server.queue(Canned(patch={"expires_in": None, "access_token": json.dumps(f"e30.{claims}.sig")}))
    started = time.time()
    result = Refresher(runtime).refresh("user")
    due = redis_client.zscore("tokenkeeper:schedule", "user")
    assert result.status == "active" and due is not None and due >= started + 30
    assert "arrive already expired" in runtime.store.load("user").reason
