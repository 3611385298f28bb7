"""One refresh attempt under stress: a lock that lapsed under a slow answer, forced refreshes during a
backoff, and an attempt that died between the provider's answer and our write (the attempt journal)."""

from __future__ import annotations

import calendar
import dataclasses
import multiprocessing
import os
import re
import signal
import threading
import time

import pytest
import redis

from config import load_settings
from tests.support.processes import wait_until
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.consumer import TokenReader
from workers.engine.overview import Query, listing
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime, build_runtime
from workers.errors import TokenkeeperError
from workers.store import KEEP_SCHEDULE, WRITE_STALE_VERSION

# The tightest lock the settings accept for a 1 s + 1.5 s deadline.
TIGHT = {
    "TOKENKEEPER_LOCK_TTL": "3.5",
    "TOKENKEEPER_HTTP_CONNECT_TIMEOUT": "1",
    "TOKENKEEPER_HTTP_READ_TIMEOUT": "1.5",
}


@pytest.fixture
def tight_runtime(environ: dict[str, str]) -> Runtime:
    settings = load_settings({**environ, **TIGHT})
    return build_runtime(dataclasses.replace(settings, accept_plain_secrets=True))


def test_a_slow_refresh_keeps_its_rotated_token_when_its_lock_lapsed(
    tight_runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """An answer 1.3 s late plus Redis pausing writes for 4 s (as a failover does) outlast the 3.5 s lock: the
    write still lands because nobody wrote meanwhile, and the next refresh uses the rotated token."""
    runtime = tight_runtime
    Registry(runtime).create(rt_spec(token_server, "user"))
    late = Canned(answer_late=1.3)
    token_server.queue(late)
    pause = threading.Thread(
        target=lambda: late.arrived.wait(10) and redis_client.execute_command("CLIENT", "PAUSE", 4000, "WRITE")
    )
    pause.start()
    started = time.monotonic()
    first = Refresher(runtime).refresh("user")
    took = time.monotonic() - started
    pause.join()
    assert took > 3.5, f"the lock did not lapse (the refresh took {took:.2f}s)"
    assert first.outcome == "refreshed", first
    live = next(iter(token_server.live_refresh))
    assert runtime.box.open(runtime.store.load("user").sealed_secrets)["refresh_token"] == live
    second = Refresher(runtime).refresh("user")
    assert second.outcome == "refreshed", second
    assert token_server.reused == []


def test_a_write_after_its_lock_lapsed_lands_only_while_the_version_is_unchanged(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A lapsed writer's change is kept when nobody wrote since (and the new holder's lock is left alone);
    the new holder, started from the same version, is then rejected: the newer token is never overwritten."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    store = runtime.store
    lapsed = store.acquire("svc", ttl=0.05)
    record = store.load("svc")
    assert lapsed is not None and record is not None
    wait_until(lambda: not redis_client.exists("tokenkeeper:lock:svc"), 5, "the lock to lapse")
    holder = store.acquire("svc", ttl=10)
    assert holder is not None
    version = store.write(
        lapsed, record.version, {"status": "active"}, {"access_token": "FROM-LAPSED"}, {}, KEEP_SCHEDULE, release=True
    )
    assert version == record.version + 1
    assert redis_client.get("tokenkeeper:lock:svc") == holder.owner
    stale = store.write(holder, record.version, {"status": "active"}, {"access_token": "FROM-HOLDER"}, {}, None)
    assert stale == WRITE_STALE_VERSION
    assert redis_client.hget("tokenkeeper:token:svc", "access_token") == "FROM-LAPSED"


def _outage(token_server: TokenServer, answers: int = 20) -> None:
    token_server.queue(
        *[Canned(503, b"<html>down</html>", {"Retry-After": "30", "Content-Type": "text/html"})] * answers
    )


def test_forced_refreshes_during_a_backoff_do_not_call_the_provider(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """With the provider answering 503 + Retry-After: 30, five forced refreshes make one request; the rest
    answer deferred with the stored token's expiry and status."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    stored = redis_client.hgetall("tokenkeeper:token:svc")
    _outage(token_server)
    before = len(token_server.bodies)
    results = [Refresher(runtime).refresh("svc") for _ in range(5)]
    assert len(token_server.bodies) - before == 1
    assert results[0].outcome == "retrying"
    for result in results[1:]:
        answer = result.as_dict()
        assert answer["outcome"] == "deferred" and answer["status"] == "retrying"
        assert answer["expires_at"] == stored["expires_at"]
        assert "http_503" in answer["detail"] and "retry 1 at" in answer["detail"]
    assert redis_client.hget("tokenkeeper:token:svc", "access_token") == stored["access_token"]


def test_min_valid_reads_during_an_outage_ask_the_provider_once(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Five reads wanting an hour of validity during an outage make one provider request and fail at once,
    saying the integration is backing off."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    _outage(token_server)
    reader = TokenReader(redis_client, request_refresh=lambda name: Refresher(runtime).refresh(name).as_dict())
    before = len(token_server.bodies)
    started = time.monotonic()
    for _ in range(5):
        with pytest.raises(TokenkeeperError, match="retrying"):
            reader.get("svc", min_valid=3600, timeout=2)
    assert len(token_server.bodies) - before == 1
    assert time.monotonic() - started < 5  # the deferred ones answer at once, not at the timeout


def _refresh_in_child(runtime: Runtime) -> None:
    Refresher(runtime).refresh("user")


UTC_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def test_an_attempt_killed_after_the_provider_rotated_is_named_in_the_reason(
    tight_runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A refresher SIGKILLed while the provider holds its (already rotated) answer leaves a journal entry:
    the next attempt's invalid_grant says the token was probably lost in a crash at that time, the status
    page row shows it, and no refresh token is anywhere in Redis."""
    runtime = tight_runtime
    Registry(runtime).create(rt_spec(token_server, "user"))
    sent = redis_client.hgetall("tokenkeeper:integration:user")
    hold = threading.Event()
    held = Canned(process_first=True, hold=hold)
    token_server.queue(held)
    crashed_at = time.time()
    child = multiprocessing.get_context("fork").Process(target=_refresh_in_child, args=(runtime,))
    child.start()
    assert held.arrived.wait(10), "the attempt never reached the provider"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    hold.set()
    wait_until(lambda: not redis_client.exists("tokenkeeper:lock:user"), 10, "the dead attempt's lock to lapse")
    result = Refresher(runtime).refresh("user")
    assert result.status == "needs_reauth"
    reason = runtime.store.load("user").reason
    assert "invalid_grant" in reason and "crash" in reason, reason
    stamp = UTC_TIME.search(reason)
    assert stamp is not None, reason
    at = calendar.timegm(time.strptime(stamp.group(0), "%Y-%m-%d %H:%M:%S UTC"))
    assert crashed_at - 1 <= at <= time.time()
    (row,) = [row for row in listing(runtime.store, Query(), time.time()).rows if row.name == "user"]
    assert stamp.group(0) in row.lost_attempt
    tokens = set(token_server.live_refresh) | token_server.spent_refresh
    assert len(tokens) >= 2 and sent
    for key in redis_client.scan_iter("*"):
        dumped = redis_client.dump(key) or b""
        assert not any(token.encode() in dumped for token in tokens), key
