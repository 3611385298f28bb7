"""The scheduling tick: queue each refresh that comes due within the horizon.

Beat runs this every few seconds. Only refreshes due within the horizon are
queued (with a countdown), so no worker holds one waiting task per integration;
everything further out stays in the Redis schedule. Refreshes that may start
within the same short slot travel as one batch task: at scale, one Celery
message per refresh costs more than the refresh itself.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.engine.capacity import DONE_OUTCOMES, SAMPLE_EVERY, WINDOW, Capacity, done_rate
from workers.store import Store

# items (name, planned time), countdown
Enqueue = Callable[[list[tuple[str, float]], float], None]

BATCH = 1000
# Refreshes whose starts fall in one slot of this many seconds share a task; each
# starts at most this much after its own start time.
SLOT = 0.25
MAX_BATCH = 100


def dispatch_due(
    store: Store,
    enqueue: Enqueue,
    *,
    now: float,
    horizon: float,
    lost_after: float,
    max_rate: float = 0.0,
    margin: float = 0.0,
) -> int:
    """Claim and queue every refresh that may start before ``now + horizon``; return how many.

    ``max_rate`` caps refreshes per second at each token endpoint host, but never holds one
    later than ``margin`` seconds before its token expires.
    """
    queued = 0
    while True:
        claimed = store.claim_due(now, horizon, lost_after, BATCH, max_rate, margin)
        for countdown, items in batches(claimed, now):
            enqueue(items, countdown)
        queued += len(claimed)
        if len(claimed) < BATCH and not claimed.more:
            return queued


def batches(claimed: list[tuple[str, float, float]], now: float) -> list[tuple[float, list[tuple[str, float]]]]:
    """Group (name, plan, start) by start slot: [(countdown, [(name, plan), ...]), ...], in start order.

    A batch goes out at its latest start, so no refresh in it runs before its own
    start (which keeps "never before half the lifetime"); the earliest waits < SLOT.
    """
    groups: list[tuple[float, list[tuple[str, float]]]] = []
    slot_start = last_start = 0.0
    for name, plan, start in sorted(claimed, key=lambda item: item[2]):
        if not groups or start - slot_start >= SLOT or len(groups[-1][1]) >= MAX_BATCH:
            if groups:
                groups[-1] = (max(0.0, last_start - now), groups[-1][1])
            slot_start = start
            groups.append((0.0, []))
        groups[-1][1].append((name, plan))
        last_start = start
    if groups:
        groups[-1] = (max(0.0, last_start - now), groups[-1][1])
    return groups


def measure_capacity(store: Store, *, now: float, lost_after: float, patience: float) -> Capacity:
    """The tick's look at whether the workers keep up; kept in Redis for /healthz, /metrics and the next tick."""
    due, waiting, finished, saved = store.capacity_counts(now, WINDOW, patience, lost_after, DONE_OUTCOMES)
    previous_total = float(saved["finished"]) if saved.get("finished") else None
    previous_at = float(saved["sampled_at"]) if saved.get("sampled_at") else None
    doing = float(saved["doing"]) if saved.get("doing") else None
    fields: dict[str, object] = {}
    if previous_at is None or now - previous_at >= SAMPLE_EVERY or now < previous_at:
        rate = done_rate(finished, now, previous_total, previous_at)
        doing = rate if rate is not None else doing
        fields.update(finished=finished, sampled_at=now, doing="" if doing is None else round(doing, 3))
    capacity = Capacity(need=due / WINDOW, doing=doing, waiting=waiting, patience=patience)
    store.save_capacity({**fields, "need": round(capacity.need, 3), "waiting": waiting, "at": now})
    return capacity
