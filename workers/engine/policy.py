"""When to refresh and how long to back off: pure arithmetic, no I/O.

A token is refreshed ``lead`` seconds before it expires, but never before half
its lifetime has passed (a provider that issues short tokens must not be asked
for a new one every few milliseconds). Tokens issued together are spread over
up to ``jitter`` seconds so they do not all come due at once. A token that never
expires but came with a refresh token is refreshed every ``keepalive`` seconds all
the same: some providers let a refresh token die when it goes unused for long. And
no token is refreshed sooner than ``min_interval`` after the last: a provider whose
tokens arrive already expired would otherwise be asked on every scheduling tick.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

Random = Callable[[], float]

# A provider's Retry-After is honoured, but no longer than this.
MAX_RETRY_AFTER = 3600.0

# How long a change (an update, a deletion, a finished authorization) waits for a refresh under way
# to let go of the integration's lock; a refresh holds it for one token request at most.
LOCK_WAIT = 10.0


@dataclass(frozen=True)
class RefreshPolicy:
    lead: float = 60.0
    jitter: float = 30.0
    default_lifetime: float = 3600.0
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    keepalive: float = 3600.0
    min_interval: float = 30.0
    # How long unclear answers (unknown error codes, CDN pages) are retried before a person is asked.
    unclear_window: float = 3600.0

    def next_refresh(
        self,
        issued_at: float,
        expires_at: float | None,
        rand: Random = random.random,
        *,
        refresh_token: bool = False,
    ) -> float | None:
        """When to refresh a token issued at ``issued_at``; None: never (nothing would keep it alive)."""
        if expires_at is None and refresh_token:
            if self.keepalive <= 0:
                return None
            due = issued_at + self.keepalive - min(self.jitter, self.keepalive / 2) * rand()
            return max(due, issued_at + self.min_interval)
        lifetime = (expires_at - issued_at) if expires_at is not None else self.default_lifetime
        lifetime = max(lifetime, 0.0)
        earliest = issued_at + lifetime / 2
        latest = max(earliest, issued_at + lifetime - self.lead)
        spread = min(self.jitter, latest - earliest)
        return max(latest - spread * rand(), issued_at + self.min_interval)

    def arrives_expired(self, issued_at: float, expires_at: float | None) -> bool:
        """Whether such a token is expired, or nearly so, before the minimum interval lets it be refreshed."""
        return expires_at is not None and expires_at - issued_at <= self.min_interval

    def retry_delay(self, attempt: int, retry_after: float | None = None, rand: Random = random.random) -> float:
        """Seconds before retry number ``attempt`` (1-based): capped exponential with jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(attempt - 1, 0))
        # Half fixed, half random: retries of many integrations spread out, yet none comes back instantly.
        delay = ceiling / 2 + ceiling / 2 * rand()
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay
