"""Workers killed or stalled mid-refresh, with real processes and real signals."""

from __future__ import annotations

import calendar
import os
import re
import signal
import threading
import time

import pytest
import redis

from tests.support.processes import pool_children, wait_until
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.producer import call, send

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIFETIME = 20.0


@pytest.fixture
def fault_environ(environ: dict[str, str], token_server: TokenServer) -> dict[str, str]:
    """A lock that outlives the HTTP timeouts by little, and no lost-task requeue to muddy the picture."""
    token_server.lifetime = LIFETIME
    environ.update(
        {
            "TOKENKEEPER_LOCK_TTL": "6",
            "TOKENKEEPER_HTTP_CONNECT_TIMEOUT": "1",
            "TOKENKEEPER_HTTP_READ_TIMEOUT": "4",
            "TOKENKEEPER_LOST_AFTER": "60",
            "TOKENKEEPER_REFRESH_JITTER": "0",
            "TOKENKEEPER_REFRESH_LEAD": "10",
        }
    )
    return environ


def test_a_worker_killed_mid_refresh_is_replaced_before_the_token_expires(
    fault_environ,
    token_server: TokenServer,
    start_processes,
    celery_client,
    redis_client: redis.Redis,
) -> None:
    """SIGKILL the pool process whose refresh the provider is holding: another process refreshes in time,
    and the provider never sees a refresh token used twice."""
    first = start_processes("worker", concurrency=1, prefetch=1)
    created = call(celery_client, "tokenkeeper.create_integration", rt_spec(token_server, "user"), timeout=20)
    old = redis_client.hgetall("tokenkeeper:token:user")
    hold = threading.Event()
    held = Canned(hold=hold)
    token_server.queue(held)
    start_processes("beat")
    assert held.arrived.wait(LIFETIME), "the scheduled refresh never reached the provider"
    (victim,) = pool_children(first.pid)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in pool_children(first.pid), 10, "the pool process to be reaped")
    hold.set()  # the provider now finds its client gone and drops the request
    start_processes("worker", concurrency=1, prefetch=1)
    wait_until(
        lambda: redis_client.hget("tokenkeeper:token:user", "access_token") != old["access_token"],
        LIFETIME,
        "a refresh by another process",
    )
    refreshed_at = time.time()
    assert refreshed_at < float(created["expires_at"]), "the old token expired before the new one came"
    assert held.dropped and token_server.reused == []
    assert redis_client.hget("tokenkeeper:token:user", "status") == "active"


def test_a_stalled_lock_holder_cannot_overwrite_a_newer_token(
    fault_environ,
    token_server: TokenServer,
    start_processes,
    celery_client,
    redis_client: redis.Redis,
) -> None:
    """SIGSTOP the process holding the lock past its lifetime; another refreshes; after SIGCONT the
    stalled one's write is rejected and the newer token stays."""
    stalled = start_processes("worker", concurrency=1, prefetch=1)
    call(celery_client, "tokenkeeper.create_integration", cc_spec(token_server, "svc"), timeout=20)
    hold = threading.Event()
    held = Canned(hold=hold)
    token_server.queue(held)
    send(celery_client, "tokenkeeper.refresh_integration", "svc")
    assert held.arrived.wait(20)
    (pool,) = pool_children(stalled.pid)
    os.kill(pool, signal.SIGSTOP)
    try:
        wait_until(lambda: not redis_client.exists("tokenkeeper:lock:svc"), 10, "the stalled lock to expire")
        start_processes("worker", concurrency=1, prefetch=1)
        fresh = call(celery_client, "tokenkeeper.refresh_integration", "svc", timeout=20)
        assert fresh["outcome"] == "refreshed"
        newer = redis_client.hget("tokenkeeper:token:svc", "access_token")
    finally:
        os.kill(pool, signal.SIGCONT)
    hold.set()  # the stalled request is answered now, with a token issued after the newer one
    wait_until(
        lambda: "superseded in" in stalled.output() and "(lock expired)" in stalled.output(),
        20,
        "the stalled refresh to finish",
    )
    assert redis_client.hget("tokenkeeper:token:svc", "access_token") == newer
    assert token_server.is_valid(newer)


def test_a_worker_killed_after_the_provider_rotated_leaves_the_crash_in_the_reason(
    fault_environ,
    token_server: TokenServer,
    start_processes,
    celery_client,
    redis_client: redis.Redis,
) -> None:
    """SIGKILL the pool process after the provider rotated but before its answer arrived: the re-delivered
    refresh meets invalid_grant, and the reason names the lost refresh token (by fingerprint) and the crash
    time from the attempt journal; no refresh token is in Redis in any form."""
    from config import load_settings
    from workers.engine.journal import Fingerprints

    first = start_processes("worker", concurrency=1, prefetch=1)
    call(celery_client, "tokenkeeper.create_integration", rt_spec(token_server, "user"), timeout=20)
    hold = threading.Event()
    held = Canned(process_first=True, hold=hold)
    token_server.queue(held)
    before = time.time()
    start_processes("beat")
    assert held.arrived.wait(LIFETIME), "the scheduled refresh never reached the provider"
    arrived = time.time()
    sent = token_server.bodies[-1]["refresh_token"]  # what the doomed attempt spent
    (victim,) = pool_children(first.pid)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in pool_children(first.pid), 10, "the pool process to be reaped")
    hold.set()  # the rotated pair goes to a dead socket
    wait_until(
        lambda: redis_client.hget("tokenkeeper:token:user", "status") == "needs_reauth",
        LIFETIME,
        "the re-delivered refresh to meet invalid_grant",
    )
    reason = redis_client.hget("tokenkeeper:integration:user", "reason")
    fingerprint = Fingerprints(load_settings(fault_environ).secret_keys).of(sent)
    assert "invalid_grant" in reason and "crash" in reason and f"#{fingerprint}" in reason, reason
    stamp = re.search(r"crashed at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", reason)
    assert stamp is not None, reason
    crashed_at = calendar.timegm(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
    assert int(before) - 1 <= crashed_at <= arrived
    tokens = set(token_server.live_refresh) | token_server.spent_refresh
    for key in redis_client.scan_iter("*"):
        dumped = redis_client.dump(key) or b""
        assert not any(token.encode() in dumped for token in tokens), key
