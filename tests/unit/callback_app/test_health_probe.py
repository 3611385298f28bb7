"""The health probe: answers at once from the latest probe, and a "down" answer brings the next probe forward."""

from __future__ import annotations

import threading
import time

from callback_app.health import PROBE_INTERVAL, HealthProbe


class Parts:
    """A check whose answer the test sets; counts its runs and signals each one."""

    def __init__(self, takes: float = 0.0) -> None:
        self.takes = takes  # a real check waits up to a second for ping replies
        self.worker = "down: no worker answered"
        self.runs = 0
        self.finished = threading.Condition()

    def check(self) -> dict[str, str]:
        time.sleep(self.takes)
        answer = {"redis": "ok", "worker": self.worker, "beat": "ok"}
        with self.finished:
            self.runs += 1
            self.finished.notify_all()
        return answer

    def await_runs(self, count: int, timeout: float) -> bool:
        with self.finished:
            return self.finished.wait_for(lambda: self.runs >= count, timeout)


def test_a_down_answer_brings_the_next_probe_forward() -> None:
    """A worker that came up after the last probe is seen well before a probe interval has passed."""
    parts = Parts()
    probe = HealthProbe(parts.check)
    assert not probe.current().healthy  # the first request waits for the first probe
    parts.worker = "ok (1)"
    served_down_at = time.monotonic()
    probe.current()  # still the old answer: nobody waits, but the next probe starts now
    assert parts.await_runs(2, PROBE_INTERVAL / 2), "the next probe waited for the interval"
    answer = probe.current()
    assert answer.healthy, answer.checks
    assert time.monotonic() - served_down_at < PROBE_INTERVAL / 2


def test_a_healthy_answer_is_served_from_the_latest_probe() -> None:
    """While healthy, requests run no check of their own: ten requests, no extra probe."""
    parts = Parts()
    parts.worker = "ok (1)"
    probe = HealthProbe(parts.check)
    assert probe.current().healthy
    runs = parts.runs
    for _ in range(10):
        assert probe.current().healthy
    assert parts.runs == runs


def test_callers_of_a_service_that_is_down_are_answered_at_once_and_share_probes() -> None:
    """Twenty callers at once while down: each answered without waiting for a probe, and one probe runs at a time."""
    parts = Parts(takes=0.3)
    probe = HealthProbe(parts.check)
    assert not probe.current().healthy
    before = parts.runs
    durations: list[float] = []

    def call() -> None:
        started = time.monotonic()
        assert not probe.current().healthy
        durations.append(time.monotonic() - started)

    callers = [threading.Thread(target=call) for _ in range(20)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    assert len(durations) == 20
    assert max(durations) < parts.takes / 2  # nobody waited for a probe
    assert parts.await_runs(before + 1, 2 * parts.takes)  # the probe they asked for ran...
    assert parts.runs - before <= 2  # ...once (twice if one caller came in while it ran)
