"""How a batch's refreshes share threads: a few at once, their answers handed over in groups as they
come, another thread when one hangs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from workers.engine.overlap import run_overlapping


def _collect(calls: list[Any], **options: Any) -> tuple[list[Any], list[list[int]]]:
    results: list[Any] = [None] * len(calls)
    groups: list[list[int]] = []
    for group in run_overlapping(calls, **options):
        groups.append([index for index, _ in group])
        for index, result in group:
            results[index] = result
    return results, groups


def test_every_call_runs_once_and_its_result_comes_back_with_its_index() -> None:
    """Quick calls on two threads: each runs once, on no more than two threads, each result under its index."""
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            seen.append((i, threading.current_thread().name))
        return i * 10

    results, groups = _collect([lambda i=i: call(i) for i in range(40)], concurrency=2, patience=5.0)
    assert results == [i * 10 for i in range(40)]
    assert sorted(i for i, _ in seen) == list(range(40))
    assert len({name for _, name in seen}) <= 2
    assert sorted(index for group in groups for index in group) == list(range(40))


def test_a_quick_batch_is_handed_over_as_one_group() -> None:
    """Calls that all finish within the hold come back as a single group: one write for the batch."""
    _, groups = _collect([lambda i=i: i for i in range(50)], concurrency=2, patience=5.0, hold=5.0)
    assert len(groups) == 1 and sorted(groups[0]) == list(range(50))


def test_answers_are_handed_over_while_other_calls_still_run() -> None:
    """The first group reaches the caller a hold after its first answer, before a slow call finishes: a
    hanging provider holds up no write for longer."""
    release = threading.Event()

    def call(i: int) -> int:
        if i == 0:
            release.wait(10)
        return i

    results: list[int | None] = [None] * 6
    first_group: list[int] | None = None
    calls = [lambda i=i: call(i) for i in range(6)]
    for group in run_overlapping(calls, concurrency=2, patience=0.05, hold=0.05):
        if first_group is None:
            first_group = [index for index, _ in group]
            assert 0 not in first_group and not release.is_set()
            release.set()
        for index, result in group:
            results[index] = result
    assert results == list(range(6))


def test_a_hanging_call_holds_only_its_own_thread() -> None:
    """While the first call hangs, the others start within a patience or two and all finish before it does."""
    release = threading.Event()
    started: dict[int, float] = {}
    begin = time.monotonic()

    def call(i: int) -> int:
        started[i] = time.monotonic() - begin
        if i in (0, 1):
            release.wait(10)
        return i

    def hold_until_the_rest_ran() -> None:
        while len(started) < 10:
            time.sleep(0.01)
        release.set()

    watcher = threading.Thread(target=hold_until_the_rest_ran)
    watcher.start()
    results, _ = _collect([lambda i=i: call(i) for i in range(10)], concurrency=2, threads=4, patience=0.05)
    watcher.join()
    assert results == list(range(10))
    assert max(started.values()) < 0.5


def test_threads_stay_within_the_bound() -> None:
    """With every call hanging, no more than ``threads`` run at once."""
    running = 0
    peak = 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1

    _collect([call] * 12, concurrency=1, threads=3, patience=0.01)
    assert peak == 3


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_dying_under_its_call_ends_the_batch_without_its_result() -> None:
    """A call that kills its thread (what `calls must not raise` guards against) leaves None, and no hang."""

    def call(i: int) -> int:
        if i == 2:
            raise SystemExit  # ends the thread quietly
        return i

    results, _ = _collect([lambda i=i: call(i) for i in range(3)], concurrency=1, patience=0.05)
    assert results[:2] == [0, 1] and results[2] is None


def test_calls_waiting_on_the_network_bring_more_threads() -> None:
    """Calls that spend their time off the CPU (a distant provider) overlap up to ``threads``; quick
    calls that use the CPU stay on ``concurrency`` threads."""
    running = 0
    peak = 0
    lock = threading.Lock()

    def distant() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.25)
        with lock:
            running -= 1

    _collect([distant] * 12, concurrency=2, threads=4, patience=5.0, network_wait=0.1)
    assert peak == 4

    names: set[str] = set()

    def busy() -> None:
        names.add(threading.current_thread().name)
        end = time.thread_time() + 0.001
        while time.thread_time() < end:
            pass

    _collect([busy] * 50, concurrency=2, threads=4, patience=5.0, network_wait=0.1)
    assert len(names) <= 2


def test_calls_waiting_for_each_other_on_the_cpu_bring_no_more_threads() -> None:
    """Calls long on the CPU take turns at the interpreter: each spends most of its time waiting for the
    others, but the process is never idle, so another thread would only wait too (and, for token
    requests, open another connection)."""
    names: set[str] = set()

    def busy() -> None:
        names.add(threading.current_thread().name)
        end = time.thread_time() + 0.06
        while time.thread_time() < end:
            pass

    _collect([busy] * 12, concurrency=3, threads=8, patience=5.0, network_wait=0.1)
    assert len(names) == 3


def test_with_no_thread_to_be_had_every_call_still_runs_and_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system refuses new threads (a process at its limit): the caller's own thread runs the calls, and
    no finished call's result is lost to a failed thread start."""
    import workers.engine.overlap as overlap

    class Refused(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(overlap.threading, "Thread", Refused)
    results, _ = _collect([lambda i=i: i for i in range(6)], concurrency=2, patience=0.01)
    assert results == list(range(6))


def test_after_the_first_thread_no_more_are_had_and_nothing_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread starts, every later start fails, including the one a network wait asks for: all results return."""
    import workers.engine.overlap as overlap

    starts = 0
    real = threading.Thread

    class OneOnly(real):  # type: ignore[valid-type,misc]
        def start(self) -> None:
            nonlocal starts
            starts += 1
            if starts > 1:
                raise RuntimeError("can't start new thread")
            super().start()

    def distant(i: int) -> int:
        time.sleep(0.03)
        return i

    monkeypatch.setattr(overlap.threading, "Thread", OneOnly)
    results, _ = _collect([lambda i=i: distant(i) for i in range(6)], concurrency=2, network_wait=0.01)
    assert results == list(range(6))
