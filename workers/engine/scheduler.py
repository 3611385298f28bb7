"""The scheduling tick: queue each refresh that comes due within the horizon.

Beat runs this every few seconds. Only refreshes due within the horizon are
queued (with a countdown), so no worker holds one waiting task per integration;
everything further out stays in the Redis schedule. Refreshes that may start
within the same short slot travel as one batch task: at scale, one Celery
message per refresh costs more than the refresh itself.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.store import Store

# items (name, planned time), countdown
Enqueue = Callable[[list[tuple[str, float]], float], None]

BATCH = 1000
# Refreshes whose starts fall in one slot of this many seconds share a task; each
# starts at most this much after its own start time.
SLOT = 0.25
MAX_BATCH = 50


def dispatch_due(
    store: Store, enqueue: Enqueue, *, now: float, horizon: float, lost_after: float, max_rate: float = 0.0
) -> int:
    """Claim and queue every refresh that may start before ``now + horizon``; return how many."""
    queued = 0
    while True:
        claimed = store.claim_due(now, horizon, lost_after, BATCH, max_rate)
        for countdown, items in batches(claimed, now):
            enqueue(items, countdown)
        queued += len(claimed)
        if len(claimed) < BATCH:
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
