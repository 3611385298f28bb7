"""One clock for every scheduler and worker: Redis TIME, whatever each machine's own clock says."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis

from config import Settings
from workers.engine.runtime import Runtime, build_runtime
from workers.engine.scheduler import dispatch_due
from workers.store.clock import RedisClock

SKEW = 300.0


def runtime_on(settings: Settings, skew: float) -> Runtime:
    """A runtime in a process whose own clock is ``skew`` seconds off (rate cap 1 refresh/s)."""
    return build_runtime(dataclasses.replace(settings, max_refresh_rate=1.0), local_clock=lambda: time.time() + skew)


def tick(rt: Runtime) -> list[tuple[str, float]]:
    """(name, countdown) of what one scheduling tick of ``rt`` queues, as workers.tasks.tick runs it."""
    queued: list[tuple[str, float]] = []

    def enqueue(items: list[tuple[str, float]], countdown: float) -> None:
        queued.extend((name, countdown) for name, _ in items)

    dispatch_due(
        rt.store,
        enqueue,
        now=rt.clock(),
        horizon=rt.settings.schedule_horizon,
        lost_after=rt.settings.lost_after,
        max_rate=rt.settings.max_refresh_rate,
    )
    return queued


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_a_scheduler_with_a_fast_clock_claims_nothing_early_and_starves_no_one(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A beat 300 s fast neither claims a refresh 300 s early nor pushes the rate slot past one due now."""
    fast, correct = runtime_on(settings, SKEW), runtime_on(settings, 0.0)
    now = redis_now(redis_client)
    fast.store.schedule("later", now + SKEW)
    assert tick(fast) == []  # due in 300 s: outside the horizon on Redis' clock
    fast.store.schedule("due", now)
    queued = tick(correct)
    assert [name for name, _ in queued] == ["due"] and queued[0][1] < 1.0
    assert redis_client.zscore("tokenkeeper:schedule", "later") == now + SKEW


def test_a_scheduler_with_a_fast_clock_claims_a_due_refresh_at_its_due_time(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Whichever beat ticks, refreshes go out with countdown = due - now, not 300 s early or late."""
    fast, slow = runtime_on(settings, SKEW), runtime_on(settings, -SKEW)
    now = redis_now(redis_client)
    fast.store.schedule("a", now + 0.5)
    [(name_a, countdown_a)] = tick(fast)
    fast.store.schedule("b", now + 1.8)
    [(name_b, countdown_b)] = tick(slow)
    assert (name_a, name_b) == ("a", "b")
    assert 0.2 < countdown_a <= 0.5 and 1.3 < countdown_b <= 1.8


def test_the_redis_clock_tracks_redis_time(redis_client: redis.Redis) -> None:
    """Local time plus the measured offset stays within 50 ms of Redis TIME, also after the local clock jumps."""
    local = {"skew": -1234.0}
    clock = RedisClock(redis_client, local=lambda: time.time() + local["skew"], refresh_every=0.0)
    assert abs(clock() - redis_now(redis_client)) < 0.05
    local["skew"] = 777.0  # the machine's clock stepped (NTP, an operator): the next measurement follows it
    assert abs(clock() - redis_now(redis_client)) < 0.05


def test_the_redis_clock_refuses_to_guess_and_then_keeps_its_last_offset(
    redis_client: redis.Redis, redis_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Never measured: a refused TIME is an error; measured once: a refused TIME keeps the last offset."""
    redis_client.acl_setuser("clockuser", enabled=True, passwords=["+pw"], commands=["-@all"])
    try:
        client = redis.Redis(host="127.0.0.1", port=redis_port, username="clockuser", password="pw")
        clock = RedisClock(client, local=lambda: time.time() - 1234, refresh_every=0.0)
        with pytest.raises(redis.RedisError):
            clock()
        redis_client.acl_setuser("clockuser", enabled=True, passwords=["+pw"], commands=["+time"])
        assert abs(clock() - redis_now(redis_client)) < 0.05
        redis_client.acl_setuser("clockuser", enabled=True, passwords=["+pw"], commands=["-time"])
        assert abs(clock() - redis_now(redis_client)) < 0.05
        assert "Redis TIME failed (NoPermissionError)" in caplog.text
    finally:
        redis_client.acl_deluser("clockuser")
