"""The scheduling tick: queue each refresh that comes due within the horizon.

Beat runs this every few seconds. Only refreshes due within the horizon are
queued (with a countdown), so no worker holds one waiting task per integration;
everything further out stays in the Redis schedule.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.store import Store

Enqueue = Callable[[str, float, float], None]  # name, planned time, countdown

BATCH = 1000


def dispatch_due(
    store: Store, enqueue: Enqueue, *, now: float, horizon: float, lost_after: float, max_rate: float = 0.0
) -> int:
    """Claim and queue every refresh that may start before ``now + horizon``; return how many."""
    queued = 0
    while True:
        claimed = store.claim_due(now, horizon, lost_after, BATCH, max_rate)
        for name, plan, start in claimed:
            enqueue(name, plan, max(0.0, start - now))
        queued += len(claimed)
        if len(claimed) < BATCH:
            return queued
