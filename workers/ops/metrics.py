"""Prometheus metrics.

Refresh outcomes, refresh duration and lateness, webhook deliveries and the last
refresh that worked are counted in Redis hashes, so every worker process on every
machine adds to the same numbers and any callback app can serve them at
``/metrics``; integrations by status are read at scrape time, and the shortest
token lifetime is the smallest lifetime of a tally the token writes keep (a count
per lifetime of the integrations that are refreshed; see lua/lifetimes.lua). The serving process
adds what only it knows: its refresh lead and its latest ``/healthz`` answer.
Token age at read is measured where tokens are read through tokenkeeper (the
Python helper), in that process's own registry.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

import redis
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.store import Status, Store
from workers.store.codec import text_map

LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
AGE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 86400.0)

# Shown from the start, at 0 until one happens: an alert's increase() then counts the first one too.
REFRESH_OUTCOMES = ("refreshed", "retrying", "needs_reauth")
# A webhook delivery: accepted (2xx); retrying (refused with a 5xx or 429, or unreachable: another try
# follows); failed (a 4xx, a refused address, or the last try: the event is not delivered).
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed")
# Outcomes that stored a new token: the latest of them is the last refresh that worked.
OBTAINED_OUTCOMES = ("refreshed", "authorized")

log = logging.getLogger(__name__)

TOKEN_AGE_AT_READ = Histogram(
    "tokenkeeper_token_age_at_read_seconds",
    "Seconds since the token read was written by tokenkeeper, per read through the Python helper.",
    buckets=AGE_BUCKETS,
)


def observe_read(updated_at: float | None, now: float) -> None:
    if updated_at is not None:
        TOKEN_AGE_AT_READ.observe(max(0.0, now - updated_at))


class RefreshMetrics:
    """Adds one refresh to the shared counters: one pipelined round trip."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, metric: str) -> str:
        return self.store.keys.metrics(metric)

    def increments(
        self, outcome: str, duration: float | None = None, lateness: float | None = None
    ) -> list[tuple[str, str, float]]:
        """(hash, field, amount) to add for one refresh: ``duration`` only for one that asked the
        provider, ``lateness`` only for a scheduled one."""
        counts = [(self.key("refresh_outcomes"), outcome, 1.0)]
        if duration is not None:
            counts += _observation(self.key("refresh_duration"), DURATION_BUCKETS, duration)
        if lateness is not None:
            # Early (negative) counts as on time: the scheduler's accuracy is about being late.
            counts += _observation(self.key("refresh_lateness"), LATENESS_BUCKETS, max(0.0, lateness))
        return counts

    def latest(self, outcome: str, at: float) -> list[tuple[str, str, float]]:
        """(hash, field, time) to keep where later: when a refresh stored a new token."""
        return [(self.key("last_refresh"), "refreshed", at)] if outcome in OBTAINED_OUTCOMES else []

    def record(self, outcome: str, duration: float | None = None, lateness: float | None = None) -> None:
        """Count a refresh that wrote nothing (busy, skipped, superseded): one pipelined round trip."""
        self.store.add_counters(self.increments(outcome, duration, lateness))


def count_delivery(store: Store, outcome: str) -> None:
    """Count one webhook delivery attempt (one of WEBHOOK_OUTCOMES); Redis failing here is logged, not raised:
    the delivery itself is done or decided."""
    try:
        store.add_counters([(store.keys.metrics("webhook_deliveries"), outcome, 1.0)])
    except redis.RedisError as exc:
        log.warning("counting a webhook delivery (%s) failed: %s", outcome, type(exc).__name__)


def _observation(key: str, buckets: Sequence[float], value: float) -> list[tuple[str, str, float]]:
    index = bisect.bisect_left(buckets, value)
    bucket = repr(buckets[index]) if index < len(buckets) else "+Inf"
    return [(key, bucket, 1.0), (key, "sum", value)]


class StoreCollector(Collector):
    """Reads the shared counters and the integrations' statuses on every scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        key = self.store.keys.metrics
        pipe = self.store.redis.pipeline(transaction=False)
        for metric in ("refresh_outcomes", "refresh_duration", "refresh_lateness", "webhook_deliveries"):
            pipe.hgetall(key(metric))
        # Whole small hashes, like the counters: a scrape reads nothing per integration.
        pipe.hgetall(key("last_refresh"))
        pipe.hgetall(key("lifetimes"))
        *hashes, last, shortest = pipe.execute()
        last_refresh = text_map(last).get("refreshed")
        outcomes, duration, lateness, deliveries = (text_map(raw) for raw in hashes)

        yield _counter(
            "tokenkeeper_refreshes",
            "Refreshes by outcome, all workers together.",
            "outcome",
            REFRESH_OUTCOMES,
            outcomes,
        )
        yield _histogram(
            "tokenkeeper_refresh_duration_seconds",
            "Time from token request to stored answer.",
            DURATION_BUCKETS,
            duration,
        )
        yield _histogram(
            "tokenkeeper_refresh_lateness_seconds",
            "How late a scheduled refresh's request went out against its plan.",
            LATENESS_BUCKETS,
            lateness,
        )

        capacity = self.store.capacity()
        for metric, documentation, field in (
            ("tokenkeeper_refresh_need_per_second", "Refreshes per second coming due (next 5 minutes).", "need"),
            ("tokenkeeper_refresh_done_per_second", "Refreshes per second finished lately, all workers.", "doing"),
            (
                "tokenkeeper_refreshes_waiting",
                "Refreshes that could start a request deadline ago and were taken by no worker (> 0: too few).",
                "waiting",
            ),
        ):
            if capacity.get(field):
                yield GaugeMetricFamily(metric, documentation, value=float(capacity[field]))
        yielded = CounterMetricFamily(
            "tokenkeeper_rate_cap_yielded",
            "Refreshes sent at their deadline although the host's rate cap was booked (the cap is too low).",
            labels=["host"],
        )
        for host, count in sorted(self.store.cap_yielded().items()):
            yielded.add_metric([host], float(count))
        yield yielded
        yield _counter(
            "tokenkeeper_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retrying (another try follows), failed (given up).",
            "outcome",
            WEBHOOK_OUTCOMES,
            deliveries,
        )
        if last_refresh is not None:
            yield GaugeMetricFamily(
                "tokenkeeper_last_refresh_timestamp_seconds",
                "When a refresh last stored a new token (Unix seconds), any worker.",
                value=float(last_refresh),
            )
        held = [float(seconds) for seconds, count in text_map(shortest).items() if int(count) > 0]
        if held:
            yield GaugeMetricFamily(
                "tokenkeeper_shortest_lifetime_seconds",
                "The shortest lifetime among the current tokens of integrations that are refreshed.",
                value=min(held),
            )

        # The index's cell sizes: one small hash, however many integrations there are.
        statuses = self.store.index.counts("status")
        gauge = GaugeMetricFamily("tokenkeeper_integrations", "Integrations by status.", labels=["status"])
        for status in Status:
            gauge.add_metric([status], float(statuses.get(status, 0)))
        yield gauge


class ServiceCollector(Collector):
    """What the serving process knows: the refresh lead it is configured with and its latest health answer."""

    def __init__(self, lead: float | None, health: Mapping[str, str] | None) -> None:
        self.lead = lead
        self.health = health

    def collect(self) -> Iterator[Metric]:
        if self.lead is not None:
            yield GaugeMetricFamily(
                "tokenkeeper_refresh_lead_seconds",
                "Refreshes are planned this long before a token expires (TOKENKEEPER_REFRESH_LEAD).",
                value=self.lead,
            )
        if self.health is not None:
            gauge = GaugeMetricFamily(
                "tokenkeeper_health",
                "The latest /healthz answer of this process, per check: 1 ok, 0 not (down, unknown, degraded).",
                labels=["check"],
            )
            for check, value in sorted(self.health.items()):
                gauge.add_metric([check], 1.0 if value.startswith("ok") else 0.0)
            yield gauge


def _counter(
    name: str, documentation: str, label: str, always: Iterable[str], counts: Mapping[str, str]
) -> CounterMetricFamily:
    """A counter per label value: ``always`` shown (0 until counted), and any other value counted."""
    counter = CounterMetricFamily(name, documentation, labels=[label])
    for value in sorted({*always, *counts}):
        counter.add_metric([value], float(counts.get(value, 0)))
    return counter


def _histogram(name: str, documentation: str, buckets: Iterable[float], raw: dict[str, str]) -> Metric:
    cumulative = 0.0
    points: list[tuple[str, float]] = []
    for bound in [*map(repr, buckets), "+Inf"]:
        cumulative += float(raw.get(bound, 0))
        points.append((bound, cumulative))
    return HistogramMetricFamily(name, documentation, buckets=points, sum_value=float(raw.get("sum", 0)))


def exposition(store: Store, *, lead: float | None = None, health: Mapping[str, str] | None = None) -> bytes:
    """The text format Prometheus scrapes; ``lead`` and ``health`` (check -> "ok…" or why not) of the serving
    process, when it has them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    registry.register(ServiceCollector(lead, health))
    return generate_latest(registry)
