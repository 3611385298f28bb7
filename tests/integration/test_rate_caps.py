"""Rate caps spread early work per token endpoint host, and never push a refresh past its deadline."""

from __future__ import annotations

import itertools

import pytest
import redis

from workers.store import Store

MARGIN = 15.0  # a refresh must start this long before its token expires


def _integration(
    redis_client: redis.Redis, store: Store, name: str, *, plan: float, expires_at: float | None, host: str
) -> None:
    redis_client.hset(f"tokenkeeper:integration:{name}", mapping={"refresh_at": repr(plan), "rate_host": host})
    if expires_at is not None:
        redis_client.hset(f"tokenkeeper:token:{name}", "expires_at", repr(expires_at))
    store.schedule(name, plan)


def _run_ticks(redis_client: redis.Redis, store: Store, start: float, until: float, rate: float) -> dict[str, float]:
    """Claim as beat would, a tick every 2 s with a 10 s horizon: name -> start."""
    starts: dict[str, float] = {}
    now = start
    while now <= until:
        for name, _plan, begins in store.claim_due(now, 10.0, 30.0, 1000, rate, MARGIN):
            assert name not in starts, f"{name} claimed twice"
            starts[name] = begins
            redis_client.zrem("tokenkeeper:inflight", name)  # as its refresh's write does
        now += 2.0
    return starts


def test_a_cap_never_pushes_a_refresh_past_its_deadline(runtime, redis_client: redis.Redis) -> None:
    """300 refreshes due at once on one host, capped at 10/s (30 s of work): the 100 whose tokens expire in
    25 s all start by their deadline (expiry - margin); the 200 with an hour left are spread at the cap."""
    store, now = runtime.store, 1000.0
    urgent = [f"urgent{i:03}" for i in range(100)]
    early = [f"early{i:03}" for i in range(200)]
    for name in early:
        _integration(redis_client, store, name, plan=now, expires_at=now + 3600, host="idp.example")
    for name in urgent:
        _integration(redis_client, store, name, plan=now, expires_at=now + 25, host="idp.example")

    starts = _run_ticks(redis_client, store, now, now + 60, rate=10)

    assert set(starts) == {*urgent, *early}
    deadline = now + 25 - MARGIN
    late = {name: starts[name] - deadline for name in urgent if starts[name] > deadline + 1e-6}
    assert not late, f"{len(late)} pushed past their deadline, up to {max(late.values()):.1f} s"
    spread = sorted(starts[name] for name in early)
    assert all(later - earlier >= 0.1 - 1e-6 for earlier, later in itertools.pairwise(spread))
    assert spread[-1] - spread[0] >= 15  # the early work really was spread, not sent in a burst
    assert all(starts[name] >= now for name in starts)  # nothing before its plan


def test_a_refresh_with_no_expiry_left_is_not_held_back(runtime, redis_client: redis.Redis) -> None:
    """A token already past its deadline (expired, or a retry) goes at once, however far the host's cap is booked."""
    store, now = runtime.store, 1000.0
    for i in range(100):
        _integration(redis_client, store, f"booked{i}", plan=now, expires_at=now + 3600, host="idp.example")
    assert len(store.claim_due(now, 10.0, 30.0, 1000, 10, MARGIN)) == 100  # the cap is booked 10 s ahead
    _integration(redis_client, store, "expired", plan=now + 1, expires_at=now - 5, host="idp.example")
    [(name, plan, start)] = store.claim_due(now + 1, 10.0, 30.0, 1000, 10, MARGIN)
    assert (name, plan, start) == ("expired", now + 1, now + 1)


def test_caps_are_per_token_endpoint_host(runtime, redis_client: redis.Redis) -> None:
    """Two providers each get the whole cap: a backlog at one does not slow the other."""
    store, now = runtime.store, 1000.0
    for i in range(100):
        _integration(redis_client, store, f"a{i}", plan=now, expires_at=now + 3600, host="a.example")
        _integration(redis_client, store, f"b{i}", plan=now, expires_at=now + 3600, host="b.example")
    claimed = store.claim_due(now, 2.0, 30.0, 1000, 10, MARGIN)
    by_host = {host: sorted(s for n, _, s in claimed if n.startswith(host)) for host in ("a", "b")}
    assert len(by_host["a"]) == len(by_host["b"]) == 21  # 2 s at 10/s, each
    assert by_host["a"] == by_host["b"]


def test_an_integrations_own_cap_spaces_its_host(runtime, redis_client: redis.Redis) -> None:
    """A preset's cap, stored with the integration, replaces the default for its refreshes."""
    store, now = runtime.store, 1000.0
    for i in range(50):
        _integration(redis_client, store, f"s{i}", plan=now, expires_at=now + 3600, host="slow.example")
        redis_client.hset(f"tokenkeeper:integration:s{i}", "rate_cap", "2")
    claimed = store.claim_due(now, 2.0, 30.0, 1000, 100, MARGIN)
    assert sorted(start - now for _, _, start in claimed) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_a_backlog_beyond_the_first_page_is_reached(runtime, redis_client: redis.Redis) -> None:
    """1,500 refreshes at a capped host ahead of one at another: the other is claimed on the same tick."""
    store, now = runtime.store, 1000.0
    for i in range(1500):
        _integration(redis_client, store, f"busy{i:04}", plan=now - 100, expires_at=now + 3600, host="busy.example")
    _integration(redis_client, store, "quiet", plan=now, expires_at=now + 3600, host="quiet.example")
    claimed = store.claim_due(now, 2.0, 30.0, 1000, 10, MARGIN)
    assert "quiet" in [name for name, _, _ in claimed]


def test_a_created_integration_is_capped_with_its_token_endpoints_host(
    runtime, token_server, redis_client: redis.Redis
) -> None:
    """Creation stores the host the cap counts it under, and the deadline comes from its real token."""
    from tests.support.specs import cc_spec
    from workers.engine.registry import Registry

    Registry(runtime).create(cc_spec(token_server, "svc"))
    assert redis_client.hmget("tokenkeeper:integration:svc", "rate_host", "rate_cap") == ["127.0.0.1", ""]
    expires_at = float(redis_client.hget("tokenkeeper:token:svc", "expires_at"))
    redis_client.hset("tokenkeeper:rate_slots", "127.0.0.1", repr(expires_at + 3600))  # the host booked an hour out
    redis_client.zadd("tokenkeeper:schedule", {"svc": expires_at - 100})
    [(name, _plan, start)] = runtime.store.claim_due(expires_at - 100, 200.0, 30.0, 10, 10, MARGIN)
    assert name == "svc" and start == pytest.approx(expires_at - MARGIN)


def test_a_backlog_past_the_claims_bound_does_not_hold_up_another_host(runtime, redis_client: redis.Redis) -> None:
    """12,000 refreshes at one capped host ahead of one at another: one tick reaches the other (the claim goes on past
    its per-call bound), and the next tick does not look at the booked backlog again."""
    from workers.engine.scheduler import dispatch_due

    store, now = runtime.store, 1000.0
    pipe = redis_client.pipeline(transaction=False)
    for i in range(12_000):
        pipe.hset(f"tokenkeeper:integration:busy{i:05}", mapping={"refresh_at": repr(now - 100), "rate_host": "busy"})
        pipe.hset(f"tokenkeeper:token:busy{i:05}", "expires_at", repr(now + 3600))
        pipe.zadd("tokenkeeper:schedule", {f"busy{i:05}": now - 100})
    pipe.execute()
    _integration(redis_client, store, "quiet", plan=now, expires_at=now + 3600, host="quiet")
    queued: list[str] = []

    def enqueue(items: list[tuple[str, float]], countdown: float) -> None:
        queued.extend(name for name, _ in items)

    dispatch_due(store, enqueue, now=now, horizon=2.0, lost_after=30.0, max_rate=10, margin=MARGIN)
    assert "quiet" in queued
    assert len(queued) == 22  # 21 of the backlog (2 s at 10/s), and quiet
    in_range = redis_client.zcount("tokenkeeper:schedule", "-inf", repr(now + 4.0))
    assert in_range == 20  # the next tick (2 s on) sees only the backlog booked within its horizon
