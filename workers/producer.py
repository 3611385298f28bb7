"""Sending the contract's tasks, for Python producers and the CLI.

Any Celery client can send the tasks by name; this one also seals a spec's
secret fields (so the broker, its AOF and its RDB file only ever hold sealed
boxes) and sets how the arguments are shown (``argsrepr``), so not even the
boxes reach the message headers that Flower and logs display.

The public key to seal to: ``public_key=`` if given; else the one derived from
``TOKENKEEPER_SECRET_KEY`` when the producer's settings hold it; else the one
pinned in ``TOKENKEEPER_PUBLIC_KEY``; else none, and sealing is refused. Never
one read from Redis: every producer logs in to Redis as the same user, so any of
them could plant its own key there and open the others' secrets on the broker.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from config import Settings
from workers.crypto.sealing import Sealer, public_key_for
from workers.errors import ConfigurationError
from workers.ops import tracing
from workers.ops.redaction import args_repr

# The argument of each task that carries a spec or spec changes, whose secret fields are sealed.
SPEC_ARGUMENT = {
    "tokenkeeper.create_integration": 0,
    "tokenkeeper.create_integrations": 0,  # a list of specs
    "tokenkeeper.plan_integrations": 0,  # a list of specs
    "tokenkeeper.update_integration": 1,
}

_sealers: weakref.WeakKeyDictionary[Celery, Sealer] = weakref.WeakKeyDictionary()


def send(app: Celery, task: str, *args: Any, queue: str | None = None, public_key: str | None = None) -> AsyncResult:
    # The span is the parent of the worker's: its context travels in the message (workers.celery_app).
    with tracing.sending(task, args) as span:
        args = seal_arguments(app, task, args, public_key)
        argsrepr, kwargsrepr = args_repr(args, {})
        result = app.send_task(
            task,
            args=list(args),
            queue=queue or app.conf.task_default_queue,
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
        )
        span.sent(result.id)
        return result


def call(app: Celery, task: str, *args: Any, timeout: float = 60.0, public_key: str | None = None) -> Any:
    """Send ``task`` and wait for its result; its failure is raised as its error."""
    return send(app, task, *args, public_key=public_key).get(timeout=timeout, disable_sync_subtasks=False)


def seal_arguments(app: Celery, task: str, args: tuple[Any, ...], public_key: str | None = None) -> tuple[Any, ...]:
    """``args`` with the plain-text secrets of a spec (or spec changes) sealed."""
    position = SPEC_ARGUMENT.get(task)
    if position is None or len(args) <= position:
        return args
    argument = args[position]
    if isinstance(argument, Mapping):
        sealed: Any = (Sealer(public_key) if public_key else sealer_for(app)).seal_fields(argument)
    elif isinstance(argument, list):
        sealer = Sealer(public_key) if public_key else sealer_for(app)
        sealed = [sealer.seal_fields(spec) if isinstance(spec, Mapping) else spec for spec in argument]
    else:
        return args
    return (*args[:position], sealed, *args[position + 1 :])


def sealer_for(app: Celery) -> Sealer:
    """The sealer for producers using ``app`` (built by workers.celery_app.create_celery), found once."""
    sealer = _sealers.get(app)
    if sealer is None:
        sealer = _sealers[app] = Sealer(_public_key(app))
    return sealer


def _public_key(app: Celery) -> str:
    settings = app.conf.get("tokenkeeper_settings")
    if settings is None:
        raise ConfigurationError("pass public_key= (what `tokenkeeper public-key` prints) to seal the secrets")
    return find_public_key(settings)


def find_public_key(settings: Settings) -> str:
    """Derived from the secret key when the settings hold it, else the pinned ``TOKENKEEPER_PUBLIC_KEY``."""
    if settings.secret_keys:
        return public_key_for(settings.secret_keys)
    if settings.public_key:
        return settings.public_key
    raise ConfigurationError(
        "no public key to seal secrets to: set TOKENKEEPER_PUBLIC_KEY to what `tokenkeeper public-key` "
        "prints on a worker host, or pass --public-key"
    )


def call_many(
    app: Celery,
    task: str,
    arguments: Iterable[tuple[Any, ...]],
    *,
    window: int = 1000,
    on_result: Callable[[int, bool, Any], None] | None = None,
    poll: float = 0.2,
    public_key: str | None = None,
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
            pending[send(app, task, *args, public_key=public_key).id] = index
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
