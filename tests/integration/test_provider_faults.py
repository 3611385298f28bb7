"""Token endpoint faults, one at a time: the old token stays, backoff is bounded, the reason is visible."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis

from tests.support.ports import free_port
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime, build_runtime

HTML = {"Content-Type": "text/html"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def fast_runtime(settings) -> Runtime:
    """Short read timeout and small body cap, so the slow and the huge cases take no time."""
    # accept_plain_secrets: the test hands the domain plain specs in-process (see the runtime fixture).
    return build_runtime(
        dataclasses.replace(settings, http_read_timeout=0.5, max_response_bytes=100_000, accept_plain_secrets=True)
    )


FAULTS = {
    "500": (Canned(500, b"", {}), "http_500"),
    "502 with an HTML page": (Canned(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", HTML), "HTML page"),
    "read timeout": (Canned(200, b"{}", JSON, delay=1.5), "timeout"),
    "429 with Retry-After": (Canned(429, b"", {"Retry-After": "7"}), "http_429"),
    "200 with garbage": (
        Canned(200, b"\x00\xffnot a token", {"Content-Type": "application/octet-stream"}),
        "malformed_response",
    ),
    "a 10 MB body": (Canned(200, b"{" + b" " * 10_000_000 + b"}", JSON), "response_too_large"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_transient_fault_keeps_the_token_and_retries(
    fault: str, fast_runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """The refresh answers (never raises), status retrying with the reason, token unchanged, retry planned."""
    Registry(fast_runtime).create(cc_spec(token_server, "svc"))
    before = redis_client.hgetall("tokenkeeper:token:svc")
    canned, reason = FAULTS[fault]
    token_server.queue(canned)
    started = time.time()
    result = Refresher(fast_runtime).refresh("svc")
    assert result.status == "retrying" and reason in result.detail
    token = redis_client.hgetall("tokenkeeper:token:svc")
    assert token["access_token"] == before["access_token"] and token["expires_at"] == before["expires_at"]
    assert token["status"] == "retrying"
    due = redis_client.zscore("tokenkeeper:schedule", "svc")
    minimum = 7 if "Retry-After" in fault else 0.5 * 0.5  # backoff_base 0.5, first retry at least half
    assert started + minimum <= due <= time.time() + max(minimum, fast_runtime.settings.backoff_max)
    assert reason in fast_runtime.store.load("svc").reason


def test_connection_refused_is_retried(runtime: Runtime, redis_client: redis.Redis) -> None:
    """Nothing listening any more: retrying with connection_error."""
    server = TokenServer().start()
    Registry(runtime).create(cc_spec(server, "svc"))
    server.stop()
    # A new runtime: the old session's kept-alive connection would still reach the stopped server's thread.
    result = Refresher(build_runtime(runtime.settings)).refresh("svc")
    assert result.status == "retrying" and "connection_error" in result.detail


def test_a_redirect_to_another_host_is_not_followed(runtime: Runtime, token_server: TokenServer) -> None:
    """307 to elsewhere: retrying with a reason naming the host; the other host hears nothing."""
    elsewhere = TokenServer().start()
    try:
        Registry(runtime).create(cc_spec(token_server, "svc"))
        token_server.queue(Canned(307, b"", {"Location": elsewhere.url}))
        result = Refresher(runtime).refresh("svc")
        assert result.status == "retrying" and "redirect" in result.detail
        assert elsewhere.bodies == []
    finally:
        elsewhere.stop()


def test_backoff_stays_bounded_over_many_failures(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Twenty failures in a row: the planned retry is never further than backoff_max away."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    for _ in range(20):
        token_server.queue(Canned(503, b"", {}))
        now = time.time()
        # The retry the schedule makes (a forced refresh would wait for the backoff).
        Refresher(runtime).refresh("svc", planned_at=runtime.store.load("svc").refresh_at)
        assert redis_client.zscore("tokenkeeper:schedule", "svc") <= now + runtime.settings.backoff_max + 0.1
    assert runtime.store.load("svc").attempts == 20


def test_invalid_grant_after_a_lost_response_ends_in_needs_reauth(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """The provider rotated in an answer we never got: one retry meets invalid_grant, then a clear stop."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.queue(Canned(lose_response=True))
    first = Refresher(runtime).refresh("user")
    assert first.status == "retrying" and "connection_error" in first.detail
    second = Refresher(runtime).refresh("user", planned_at=runtime.store.load("user").refresh_at)
    assert second.status == "needs_reauth"
    reason = runtime.store.load("user").reason
    assert "invalid_grant" in reason and "lost" in reason and "authorize again" in reason
    assert redis_client.zscore("tokenkeeper:schedule", "user") is None
    calls = len(token_server.bodies)
    assert Refresher(runtime).refresh("user", planned_at=time.time()).outcome == "superseded"
    assert len(token_server.bodies) == calls


def test_an_unreachable_port_is_refused_quickly(runtime: Runtime) -> None:
    """Creation against a closed port fails with the transient reason and stores nothing."""
    from workers.errors import TransientProviderError

    spec = {
        "name": "svc",
        "grant_type": "client_credentials",
        "client_id": "a",
        "client_secret": "b",
        "token_url": f"http://127.0.0.1:{free_port()}/token",
    }
    with pytest.raises(TransientProviderError, match="connection_error"):
        Registry(runtime).create(spec)
    assert not runtime.store.exists("svc")
