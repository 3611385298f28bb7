"""The clock every scheduler and worker shares: Redis TIME, read as local time plus a measured offset.

Due times, claims, the rate slot and expiries are compared across processes on
different machines; each machine's own clock would let one running fast claim
refreshes early and push the rate slot past everyone else's. Asking Redis on
every read would cost a round trip per timestamp, so the offset is measured
once and again every ``refresh_every`` seconds (a stepped local clock is
followed from then on).
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from workers.clock import Clock

log = logging.getLogger(__name__)

REFRESH_EVERY = 60.0
# After a failed measurement the last offset stays in use; try again this much later.
RETRY_AFTER = 5.0


class RedisClock:
    """Seconds since the epoch on Redis' clock: ``local()`` + the offset to Redis TIME."""

    def __init__(self, client: redis.Redis, *, local: Clock = time.time, refresh_every: float = REFRESH_EVERY) -> None:
        self._redis = client
        self._local = local
        self._refresh_every = refresh_every
        self._offset: float | None = None
        self._next = 0.0  # time.monotonic() of the next measurement: a stepped local clock cannot delay it
        self._lock = threading.Lock()

    @property
    def offset(self) -> float | None:
        """Redis TIME minus the local clock, as last measured (None before the first measurement)."""
        return self._offset

    def __call__(self) -> float:
        if time.monotonic() >= self._next:
            self._measure()
        assert self._offset is not None
        return self._local() + self._offset

    def _measure(self) -> None:
        with self._lock:
            if time.monotonic() < self._next:
                return  # another thread measured meanwhile
            try:
                before = self._local()
                seconds, micros = self._redis.time()
                after = self._local()
            except redis.RedisError as exc:
                if self._offset is None:
                    raise  # never measured: no time is better than a wrong one
                log.warning("Redis TIME failed (%s); keeping the clock offset %.3f s", type(exc).__name__, self._offset)
                self._next = time.monotonic() + RETRY_AFTER
                return
            # Redis answered somewhere between the two readings: take the middle.
            self._offset = seconds + micros / 1e6 - (before + after) / 2
            self._next = time.monotonic() + self._refresh_every
