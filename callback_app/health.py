"""``GET /healthz``: 200 when Redis, a worker and beat are alive; the JSON says what is missing.

Asking the workers takes up to a second (``control.ping`` waits for every reply),
so no request does it: a probe thread per process refreshes the answer every
``PROBE_INTERVAL`` seconds while someone is asking, and ``/healthz`` serves the
latest one. Only the first request of a process, or one after a long quiet spell,
waits for a probe; any number of callers cost no more than one.

A request served an unhealthy answer starts the next probe at once instead of after
the interval: each gunicorn process probes on its own, and one whose last probe came
just before a worker answered would otherwise say "down" for a whole interval while
the others say "ok". It does not wait for that probe, so a service that is down
still answers at once, however many ask.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, jsonify

from callback_app import parts
from config import Settings
from workers.engine.capacity import from_fields

blueprint = Blueprint("health", __name__)

PROBE_INTERVAL = 2.0
PING_TIMEOUT = 1.0
# The probe thread stops after this long without a request, and starts again with the next one.
IDLE_STOP = 60.0
# An answer older than this is not served: the caller waits for a fresh probe instead.
MAX_AGE = 3 * PROBE_INTERVAL + PING_TIMEOUT


@dataclass(frozen=True)
class Probe:
    checks: dict[str, str]
    at: float  # when the check started

    @property
    def healthy(self) -> bool:
        """Serving: a degraded part (workers falling behind) still serves tokens, so it is no 503."""
        return all(value.startswith(("ok", "degraded")) for value in self.checks.values())

    @property
    def status(self) -> str:
        if not self.healthy:
            return "unavailable"
        return "ok" if all(value.startswith("ok") for value in self.checks.values()) else "degraded"


class HealthProbe:
    """The latest health answer of this process, refreshed in the background while it is asked for."""

    def __init__(self, check: Callable[[], dict[str, str]], clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._clock = clock
        self._changed = threading.Condition()
        self._latest: Probe | None = None
        self._asked = 0.0
        # When a request was served an unhealthy answer and asked for the next probe now (0: none asked).
        self._wanted = 0.0
        self._thread: threading.Thread | None = None

    def current(self) -> Probe:
        with self._changed:
            now = self._asked = self._clock()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="healthz-probe", daemon=True)
                self._thread.start()
            fresh = self._changed.wait_for(
                lambda: self._latest is not None and self._clock() - self._latest.at <= MAX_AGE,
                timeout=MAX_AGE,
            )
            if not fresh or self._latest is None:
                return Probe({"probe": f"down: no health probe finished in the last {MAX_AGE:.0f}s"}, now)
            if not self._latest.healthy and not self._wanted:
                self._wanted = now
                self._changed.notify_all()
            return self._latest

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._clock() - self._asked > IDLE_STOP:
                    self._thread = None
                    return
                started = self._clock()
                self._wanted = 0.0
            try:
                probe = Probe(self._check(), started)
            except Exception as exc:  # noqa: BLE001 -- a failed probe is an unhealthy answer, not a dead thread
                probe = Probe({"probe": f"down: {type(exc).__name__}"}, started)
            with self._changed:
                self._latest = probe
                self._changed.notify_all()
                # Asleep until the interval is over or a request served "down" asks for the next probe.
                self._changed.wait_for(lambda: self._wanted > 0.0, timeout=PROBE_INTERVAL)


def check_parts(settings: Settings, store: Any, celery: Any) -> dict[str, str]:
    """Redis, a worker and beat, each "ok…" or why not; takes up to PING_TIMEOUT seconds."""
    checks: dict[str, str] = {}
    try:
        store.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 -- any failure means "down", and is reported
        checks["redis"] = f"down: {type(exc).__name__}"
    if checks["redis"] != "ok" and settings.broker_url == settings.redis_url:
        # Pinging workers through a dead broker only waits out connection retries.
        checks["worker"] = "unknown: the broker (Redis) is down"
    else:
        try:
            replies = celery.control.ping(timeout=PING_TIMEOUT) or []
            checks["worker"] = f"ok ({len(replies)})" if replies else "down: no worker answered"
        except Exception as exc:  # noqa: BLE001 -- any failure to ping means "down", and is reported
            checks["worker"] = f"down: {type(exc).__name__}"
    if checks["redis"] == "ok":
        last = store.last_tick()
        limit = settings.schedule_interval * 3 + 5
        if last is None:
            checks["beat"] = "down: no scheduling tick seen yet"
        elif time.time() - last > limit:
            checks["beat"] = f"down: last scheduling tick {int(time.time() - last)}s ago"
        else:
            checks["beat"] = "ok"
            capacity = from_fields(store.capacity(), settings.capacity_patience)
            if capacity is not None:
                checks["capacity"] = capacity.describe()
    else:
        checks["beat"] = "unknown: Redis is down"
    return checks


def _probe() -> HealthProbe:
    extensions = current_app.extensions["tokenkeeper"]
    probe = extensions.get("health")
    if probe is None:
        settings, store, celery = parts.settings(), parts.runtime().store, parts.celery()
        # setdefault: two first requests at once must share one probe.
        probe = extensions.setdefault("health", HealthProbe(lambda: check_parts(settings, store, celery)))
    return probe


def current() -> Probe:
    """This process's latest health answer (see :meth:`HealthProbe.current`); /metrics shows it too."""
    return _probe().current()


@blueprint.get("/healthz")
def healthz() -> Any:
    probe = current()
    return jsonify(
        {
            "status": probe.status,
            "checks": probe.checks,
            "age": round(time.monotonic() - probe.at, 1),
        }
    ), 200 if probe.healthy else 503
