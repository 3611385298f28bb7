"""Sending the contract's tasks, for Python producers and the CLI.

Any Celery client can send the tasks by name; this one also sets how the
arguments are shown (``argsrepr``), so a spec's secrets never reach the
message headers that Flower and logs display.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from workers.redaction import args_repr


def send(app: Celery, task: str, *args: Any, queue: str | None = None) -> AsyncResult:
    argsrepr, kwargsrepr = args_repr(args, {})
    return app.send_task(
        task, args=list(args), queue=queue or app.conf.task_default_queue,
        argsrepr=argsrepr, kwargsrepr=kwargsrepr,
    )


def call(app: Celery, task: str, *args: Any, timeout: float = 60.0) -> Any:
    """Send ``task`` and wait for its result; its failure is raised as its error."""
    return send(app, task, *args).get(timeout=timeout, disable_sync_subtasks=False)


def call_many(
    app: Celery,
    task: str,
    arguments: Iterable[tuple[Any, ...]],
    *,
    window: int = 1000,
    on_result: Callable[[int, bool, Any], None] | None = None,
    poll: float = 0.2,
) -> tuple[int, list[tuple[int, str]]]:
    """Send ``task`` once per argument tuple, keeping at most ``window`` unanswered.

    Returns (succeeded, [(index, error message), ...]). ``on_result(index, ok, value)``
    is called as each answer arrives, for progress reporting.
    """
    backend = app.backend
    pending: dict[str, int] = {}
    succeeded, failures = 0, []
    source = iter(enumerate(arguments))
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < window:
            item = next(source, None)
            if item is None:
                exhausted = True
                break
            index, args = item
            pending[send(app, task, *args).id] = index
        for task_id, meta in _ready(backend, list(pending)):
            index = pending.pop(task_id)
            ok = meta["status"] == "SUCCESS"
            value = meta["result"] if ok else _error_text(meta["result"])
            if ok:
                succeeded += 1
            else:
                failures.append((index, value))
            if on_result is not None:
                on_result(index, ok, value)
        if pending and (exhausted or len(pending) >= window):
            # Results arrive in Redis without a notification we can wait on in bulk.
            time.sleep(poll)
    return succeeded, failures


def _ready(backend: Any, ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The results among ``ids`` that are ready now, in one MGET."""
    found: list[tuple[str, dict[str, Any]]] = []
    try:
        for task_id, meta in backend.get_many(ids, timeout=0, interval=0):
            found.append((task_id, meta))
    except CeleryTimeoutError:
        pass
    return found


def _error_text(result: Any) -> str:
    if isinstance(result, dict) and "exc_message" in result:
        message = result["exc_message"]
        text = " ".join(str(part) for part in message) if isinstance(message, (list, tuple)) else str(message)
        return text or str(result.get("exc_type", "error"))
    return str(result)
