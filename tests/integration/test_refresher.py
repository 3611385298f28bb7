"""The refresh engine against a real Redis and a real token server, in this process."""

from __future__ import annotations

import dataclasses
import threading
import time

import redis

from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.policy import RefreshPolicy
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime


def test_a_rotated_refresh_token_is_stored_encrypted_and_used_next(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Each refresh uses the refresh token the previous one received; none is ever reused."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    for _ in range(5):
        assert Refresher(runtime).refresh("user").outcome == "refreshed"
    assert token_server.reused == []
    assert token_server.count("refresh_token") == 6
    stored = redis_client.hget("tokenkeeper:integration:user", "secrets")
    live = next(iter(token_server.live_refresh))
    assert live not in stored and runtime.box.open(stored)["refresh_token"] == live


def test_concurrent_refreshes_are_single_flight(runtime: Runtime, token_server: TokenServer) -> None:
    """Eight simultaneous refreshes of one integration make one token request; the others see it busy."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.release.clear()  # hold the provider's answer so all eight overlap
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(Refresher(runtime).refresh("user").outcome)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(results) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    token_server.release.set()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["busy"] * 7 + ["refreshed"]
    assert token_server.count("refresh_token") == 2  # creation + one refresh
    assert token_server.reused == []


def test_a_late_writer_whose_lock_expired_is_rejected(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A refresh that outlived its lock cannot overwrite the token another refresh stored since."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    store = runtime.store
    stale = store.acquire("svc", ttl=0.05)
    record = store.load("svc")
    assert stale is not None and record is not None
    time.sleep(0.1)  # let the stale lock expire: that is the scenario under test
    assert Refresher(runtime).refresh("svc").outcome == "refreshed"
    fresh_token = redis_client.hget("tokenkeeper:token:svc", "access_token")
    version = store.write(stale, record.version, {"status": "active"}, {"access_token": "OLD"}, {}, None)
    assert version < 0
    assert redis_client.hget("tokenkeeper:token:svc", "access_token") == fresh_token


def test_a_duplicate_scheduled_delivery_is_superseded(runtime: Runtime, token_server: TokenServer) -> None:
    """Two deliveries of the same scheduled refresh make one token request."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    planned = runtime.store.load("svc").refresh_at
    assert Refresher(runtime).refresh("svc", planned_at=planned).outcome == "refreshed"
    assert Refresher(runtime).refresh("svc", planned_at=planned).outcome == "superseded"
    assert token_server.count("client_credentials") == 2


def test_invalid_grant_stops_refreshing_with_a_reason(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """invalid_grant sets needs_reauth with the provider's words, unschedules, and calls no more."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    old_token = redis_client.hget("tokenkeeper:token:user", "access_token")
    token_server.live_refresh.clear()  # the provider revoked it
    result = Refresher(runtime).refresh("user")
    assert result.status == "needs_reauth" and "invalid_grant" in result.detail
    token = redis_client.hgetall("tokenkeeper:token:user")
    assert token["status"] == "needs_reauth" and token["access_token"] == old_token
    assert redis_client.zscore("tokenkeeper:schedule", "user") is None
    calls = len(token_server.bodies)
    assert Refresher(runtime).refresh("user", planned_at=time.time()).outcome == "superseded"
    assert len(token_server.bodies) == calls
    history = runtime.store.history("user")
    assert history[0]["status"] == "needs_reauth" and "invalid_grant" in history[0]["reason"]


def test_server_errors_retry_with_backoff_and_keep_the_token(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A 503 sets retrying, keeps the valid old token, and plans the retry after the backoff."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    old_token = redis_client.hget("tokenkeeper:token:svc", "access_token")
    token_server.queue(Canned(503, b"<html>down</html>", {"Content-Type": "text/html"}), Canned(503, b"", {}))
    before = time.time()
    first = Refresher(runtime).refresh("svc")
    # The retries the schedule makes (a forced refresh would wait for the backoff).
    second = Refresher(runtime).refresh("svc", planned_at=runtime.store.load("svc").refresh_at)
    assert first.status == second.status == "retrying"
    token = redis_client.hgetall("tokenkeeper:token:svc")
    assert token["access_token"] == old_token and token["status"] == "retrying"
    record = runtime.store.load("svc")
    assert record.attempts == 2 and "http_503" in record.reason
    # backoff_base 0.5: retry 2 waits between 0.5 and 1 s.
    assert before + 0.5 <= redis_client.zscore("tokenkeeper:schedule", "svc") <= time.time() + 1.0
    assert Refresher(runtime).refresh("svc", planned_at=runtime.store.load("svc").refresh_at).status == "active"
    assert runtime.store.load("svc").attempts == 0
    statuses = [entry["status"] for entry in runtime.store.history("svc")]
    assert statuses == ["active", "retrying", "active"]


def test_retry_after_is_honoured(runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis) -> None:
    """429 with Retry-After: 40 plans the next attempt no sooner than 40 s on."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    token_server.queue(
        Canned(429, b'{"error": "slow_down"}', {"Retry-After": "40", "Content-Type": "application/json"})
    )
    before = time.time()
    assert Refresher(runtime).refresh("svc").status == "retrying"
    assert redis_client.zscore("tokenkeeper:schedule", "svc") >= before + 40


def test_a_forced_refresh_of_a_stopped_integration_says_why(runtime: Runtime, token_server: TokenServer) -> None:
    """refresh_integration on needs_reauth raises a StateError naming the status and reason."""
    import pytest

    from workers.errors import StateError

    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.live_refresh.clear()
    Refresher(runtime).refresh("user")
    with pytest.raises(StateError, match=r"needs_reauth.*invalid_grant"):
        Refresher(runtime).refresh("user")


class _PolicyThatBreaks(RefreshPolicy):
    """A refresh policy that fails on the answer, after the provider has already rotated the refresh token."""

    def next_refresh(self, *args: object, **kwargs: object) -> float | None:
        raise ArithmeticError("planning failed")


def test_an_error_after_the_provider_rotated_still_keeps_the_rotated_token(
    runtime: Runtime, token_server: TokenServer
) -> None:
    """The new pair is stored before anything else is interpreted: a failure past the answer loses no token."""
    Registry(runtime).create(rt_spec(token_server))
    broken = dataclasses.replace(runtime, policy=_PolicyThatBreaks(**dataclasses.asdict(runtime.policy)))
    failed = Refresher(broken).refresh("user")
    assert failed.status == "retrying"
    # The provider retired the token it was sent; the retry must present the one it answered with.
    plan = runtime.store.load("user").refresh_at
    recovered = Refresher(runtime).refresh("user", planned_at=plan)
    assert recovered.outcome == "refreshed"
    assert token_server.reused == []
