"""Sending the contract's tasks, for Python producers and the CLI.

Any Celery client can send the tasks by name; this one also sets how the
arguments are shown (``argsrepr``), so a spec's secrets never reach the
message headers that Flower and logs display.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
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
