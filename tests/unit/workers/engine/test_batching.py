"""How a batch's refreshes share threads: serial while quick, another thread when one hangs."""

from __future__ import annotations

import threading
import time

from workers.engine.refresher import run_overlapping


def test_quick_calls_run_in_order_on_one_thread() -> None:
    """Calls that finish at once all run on the same single thread, in order, results in order."""
    seen: list[tuple[int, str]] = []

    def call(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 10

    results = run_overlapping([lambda i=i: call(i) for i in range(20)], patience=5.0)  # type: ignore[misc]
    assert results == [i * 10 for i in range(20)]
    assert [i for i, _ in seen] == list(range(20)) and len({name for _, name in seen}) == 1


def test_a_hanging_call_holds_only_its_own_thread() -> None:
    """While the first call hangs, the others start within a patience or two and all finish before it does."""
    release = threading.Event()
    started: dict[int, float] = {}
    begin = time.monotonic()

    def call(i: int) -> int:
        started[i] = time.monotonic() - begin
        if i == 0:
            release.wait(10)
        return i

    def hold_until_the_rest_ran() -> None:
        while len(started) < 10:
            time.sleep(0.01)
        release.set()

    watcher = threading.Thread(target=hold_until_the_rest_ran)
    watcher.start()
    results = run_overlapping([lambda i=i: call(i) for i in range(10)], threads=4, patience=0.05)  # type: ignore[misc]
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

    run_overlapping([call] * 12, threads=3, patience=0.01)
    assert peak == 3
