"""The scheduling tick: due refreshes are queued once, lost ones are queued again."""

from __future__ import annotations

import itertools
import threading

import redis

from workers.engine.scheduler import dispatch_due
from workers.store import Store


def collect(
    store: Store, now: float, horizon: float = 10, lost_after: float = 30, max_rate: float = 0.0
) -> list[tuple[str, float, float]]:
    """(name, plan, countdown) of everything one tick queues, whatever batches it travels in."""
    queued: list[tuple[str, float, float]] = []

    def enqueue(items: list[tuple[str, float]], countdown: float) -> None:
        queued.extend((name, plan, countdown) for name, plan in items)

    dispatch_due(store, enqueue, now=now, horizon=horizon, lost_after=lost_after, max_rate=max_rate)
    return queued


def test_only_refreshes_within_the_horizon_are_queued_with_their_countdown(runtime) -> None:
    """Due within the horizon: queued with countdown = due - now (0 when overdue); later ones wait."""
    store = runtime.store
    for name, due in {"overdue": 95.0, "soon": 104.0, "later": 500.0}.items():
        store.schedule(name, due)
    assert sorted(collect(store, now=100)) == [("overdue", 95.0, 0.0), ("soon", 104.0, 4.0)]
    assert collect(store, now=101) == []  # claimed once, not again
    assert collect(store, now=495) == [("later", 500.0, 5.0)]


def test_a_lost_refresh_is_queued_again_under_its_original_plan(runtime, redis_client) -> None:
    """Claimed but never finished (its worker died): after lost_after the next tick queues it again."""
    store = runtime.store
    redis_client.hset("tokenkeeper:integration:svc", "refresh_at", "100.0")
    store.schedule("svc", 100.0)
    assert collect(store, now=99, lost_after=30) == [("svc", 100.0, 1.0)]
    assert collect(store, now=129, lost_after=30) == []
    assert collect(store, now=131, lost_after=30) == [("svc", 100.0, 0.0)]


def test_an_overdue_backlog_is_queued_once(runtime, redis_client) -> None:
    """After beat was down, refreshes overdue by more than lost_after are queued once, not again and again."""
    store = runtime.store
    for i in range(2500):
        store.schedule(f"i{i}", 100.0 + i)
    queued = collect(store, now=10_000, lost_after=30)
    assert len(queued) == 2500 and len({name for name, _, _ in queued}) == 2500
    assert collect(store, now=10_001, lost_after=30) == []


def test_a_lost_refresh_of_a_deleted_integration_is_dropped(runtime) -> None:
    """Nothing is queued for an integration that no longer has a plan."""
    store = runtime.store
    store.schedule("gone", 100.0)
    assert len(collect(store, now=99, lost_after=30)) == 1
    assert collect(store, now=200, lost_after=30) == []
    assert runtime.store.redis.zcard(store.keys.inflight) == 0


def test_two_schedulers_never_queue_the_same_refresh(runtime, redis_url: str) -> None:
    """Two beats ticking at once split the due refreshes between them; none is queued twice."""
    store = runtime.store
    for i in range(3000):
        store.schedule(f"i{i}", 100.0 + i / 1000)
    results: list[list[tuple[str, float, float]]] = [[], []]

    def tick(index: int) -> None:
        other = Store(redis.Redis.from_url(redis_url))
        dispatch_due(other, lambda items, countdown: results[index].extend(items), now=200, horizon=10, lost_after=30)

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [item[0] for result in results for item in result]
    assert len(names) == 3000 and len(set(names)) == 3000


def test_a_backlog_is_spread_at_the_rate_cap(runtime) -> None:
    """100 overdue refreshes at 10/s with a 2 s horizon: 21 start 0.1 s apart now, the next 10 a tick later."""
    store = runtime.store
    for i in range(100):
        store.schedule(f"i{i}", 10.0 + i)
    first = store.claim_due(1000, 2, 30, 1000, max_rate=10)
    assert len(first) == 21
    assert [round(start - 1000, 3) for _, _, start in first] == [round(i * 0.1, 3) for i in range(21)]
    assert [plan for _, plan, _ in first] == [10.0 + i for i in range(21)]  # plans kept for identity
    second = store.claim_due(1001, 2, 30, 1000, max_rate=10)
    assert len(second) == 10
    assert round(second[0][2] - 1001, 3) == 1.1  # continues after the last booked start (1002.0)
    batched = collect(store, now=1002, horizon=2, max_rate=10)
    assert len(batched) == 10 and all(countdown <= 2.0 for _, _, countdown in batched)


def test_two_schedulers_share_the_rate_cap(runtime, redis_url: str) -> None:
    """Two beats claiming at once book distinct start slots: together they keep to the cap."""
    store = runtime.store
    for i in range(400):
        store.schedule(f"i{i}", 100.0)
    starts: list[float] = []

    def tick() -> None:
        other = Store(redis.Redis.from_url(redis_url))
        starts.extend(start for _, _, start in other.claim_due(200, 5, 30, 1000, max_rate=20))

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert len(starts) == 101
    assert all(later - earlier >= 0.05 - 1e-6 for earlier, later in itertools.pairwise(starts))
