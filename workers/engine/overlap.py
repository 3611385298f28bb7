"""Running a batch's provider requests side by side, and handing their answers over in groups.

A batch's requests (refreshes, creations) overlap on BATCH_CONCURRENCY threads: while one waits
for its provider, another prepares or parses (more would only fight over the GIL on a quick
provider). A request during which the whole process spent over BATCH_NETWORK_WAIT seconds off the
CPU (a provider across a network) brings another thread, up to BATCH_THREADS: then more requests in
flight cost nothing. So does a whole BATCH_PATIENCE with no request finished (a provider hanging): it holds
one thread, and the batch goes on on the others. The answers are handed over in groups, each
written in one Redis round trip: the whole batch when it is quick, else what finished within
BATCH_HOLD seconds of the group's first answer (a slow provider holds up nobody's write for longer).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

BATCH_CONCURRENCY = 3
BATCH_THREADS = 16
BATCH_PATIENCE = 0.2
BATCH_HOLD = 0.05
BATCH_NETWORK_WAIT = 0.02


def run_overlapping(
    calls: Sequence[Callable[[], T]],
    concurrency: int = BATCH_CONCURRENCY,
    threads: int = BATCH_THREADS,
    patience: float = BATCH_PATIENCE,
    hold: float = BATCH_HOLD,
    network_wait: float = BATCH_NETWORK_WAIT,
) -> Iterator[list[tuple[int, T]]]:
    """Run ``calls`` on ``concurrency`` threads, adding one whenever none finished for ``patience`` s,
    or the process spent more than ``network_wait`` s of a call off the CPU, up to ``threads``.

    Yields the finished ones as (index, result) in groups, while the others go on: a group is
    handed over once every call has finished, or once its first result has waited ``hold`` s.
    The caller's own thread handles each group. ``calls`` must not raise; one whose thread dies
    under it is left out.
    """
    pending = deque(enumerate(calls))
    finished: list[tuple[int, T]] = []
    progress = threading.Condition()
    outstanding = len(calls)  # neither finished nor handed over
    held_since = last_progress = time.monotonic()
    started: list[threading.Thread] = []

    def alive() -> int:
        return sum(1 for thread in started if thread.is_alive())

    def start() -> bool:
        """Another thread for the pending calls; False when the system gives none (the others go on)."""
        thread = threading.Thread(target=drain, name=f"tokenkeeper-refresh-{len(started)}", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            return False
        started.append(thread)
        return True

    def record(index: int, result: T) -> None:
        nonlocal held_since, last_progress
        last_progress = time.monotonic()
        finished.append((index, result))
        if len(finished) == 1:
            held_since = last_progress
        # Woken for a group's first result (its hold starts) and for the last one, not for each.
        if len(finished) == 1 or len(finished) == outstanding:
            progress.notify()

    def drain() -> None:
        while True:
            with progress:
                if not pending:
                    return
                index, call = pending.popleft()
            # The process's CPU time, not the thread's: a call waiting for the GIL while the other
            # threads work is not waiting on the network, and another thread would only wait too.
            # A worker process runs one batch at a time (prefork), so the process's time is the
            # batch's; where other work shares the process (Celery's threads pool), its CPU counts
            # too, and a distant provider's batch grows only by the patience rule.
            began, used = time.monotonic(), time.process_time()
            result = call()
            idle = time.monotonic() - began - (time.process_time() - used)
            with progress:
                # Recorded first: nothing after the call may lose its result.
                record(index, result)
                if idle > network_wait and pending and alive() < threads:
                    # The whole process sat idle through the call, waiting on the network: another
                    # request in flight costs nothing but a thread.
                    start()

    with progress:
        for _ in range(min(concurrency, len(calls))):
            start()
    while outstanding:
        with progress:
            while True:
                now = time.monotonic()
                if finished and (len(finished) == outstanding or now >= held_since + hold):
                    break
                running = alive()
                if pending and running == 0 and not start():
                    # No thread to be had: the caller's own thread takes the next call.
                    index, call = pending.popleft()
                    progress.release()
                    try:
                        result = call()
                    finally:
                        progress.acquire()
                    record(index, result)
                    continue
                if not pending and running == 0:
                    break  # a thread died under its call: nothing more will come
                if pending and now - last_progress >= patience and running < threads:
                    # No call finished for a whole patience: one is hanging; take up the rest on another thread.
                    start()
                    last_progress = now
                # With calls pending, look again when a patience is up; else only to notice a dead thread.
                wait = last_progress + patience - now if pending else 1.0
                if wait <= 0:
                    wait = patience  # at the thread bound: nothing to do but wait
                if finished:
                    wait = min(wait, held_since + hold - now)
                progress.wait(max(wait, 0.001))
            group, finished[:] = finished[:], []
            outstanding -= len(group)
        if not group:
            break
        yield group
    for thread in started:
        thread.join()
