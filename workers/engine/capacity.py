"""Whether the workers keep up: refreshes coming due per second against refreshes done per second.

Pure arithmetic over counts the scheduling tick reads from Redis. The signal that
matters is a refresh that could start more than ``patience`` seconds ago and that no
worker holds: a worker takes a refresh's lock as it starts it, so one still unheld was
not taken — the workers are behind, and tokens will expire if it goes on. It shows
long before that: the refresh lead is far larger than the patience.
"""

from __future__ import annotations

from dataclasses import dataclass

# Refreshes coming due within this many seconds make the "need" rate.
WINDOW = 300.0
# The finished-refresh count is sampled at most this often, so "doing" is a rate over at least this long.
SAMPLE_EVERY = 30.0
# Refreshes that asked the provider ("busy", "skipped", "superseded" and "deferred" did no work).
DONE_OUTCOMES = ("refreshed", "retrying", "needs_reauth")


@dataclass(frozen=True)
class Capacity:
    need: float  # refreshes per second coming due
    doing: float | None  # refreshes finished per second lately; None until two samples exist
    waiting: int  # refreshes that could start over ``patience`` seconds ago and have not finished
    patience: float

    @property
    def exceeded(self) -> bool:
        return self.waiting > 0

    @property
    def rates(self) -> str:
        doing = "unknown" if self.doing is None else f"{self.doing:.1f}/s"
        return f"need {self.need:.1f}/s, doing {doing}"

    @property
    def problem(self) -> str:
        """What beat logs and /healthz says while exceeded."""
        return f"refresh capacity exceeded: {self.rates}; {self.waiting} waiting over {self.patience:.0f}s"

    def describe(self) -> str:
        return f"degraded: {self.problem}" if self.exceeded else f"ok ({self.rates})"


def done_rate(total: float, at: float, previous_total: float | None, previous_at: float | None) -> float | None:
    """Finished refreshes per second between two samples of the running total."""
    if previous_total is None or previous_at is None or at <= previous_at or total < previous_total:
        return None
    return (total - previous_total) / (at - previous_at)


def from_fields(fields: dict[str, str], patience: float) -> Capacity | None:
    """The figures the tick saved (see ``workers.engine.scheduler.measure_capacity``); None before the first."""
    if not fields.get("at"):
        return None
    doing = fields.get("doing")
    return Capacity(
        need=float(fields.get("need") or 0),
        doing=float(doing) if doing else None,
        waiting=int(fields.get("waiting") or 0),
        patience=patience,
    )
