"""The one place a Celery app is built: ``create_celery(settings)``.

Run a worker with ``celery -A workers.celery_app worker`` and the scheduler with
``celery -A workers.celery_app beat``, both from the repository root. Celery finds
the module's ``app`` attribute; it is built from the environment on that first
access (PEP 562), so importing this module (the Flask factory, the CLI, a
producer, tests) reads no settings and builds no app. Each entry point builds
one app from the settings it loaded; the tasks and the signal handlers below
find the settings through the app (:func:`settings_of`), never a module global.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery, current_app, signals
from celery.worker.request import Request

from config import Settings, load_settings, local_environ
from workers.errors import ConfigurationError
from workers.ops import tracing
from workers.ops.logformat import configure
from workers.ops.redaction import args_repr


class RedactedRequest(Request):
    """Shows task arguments without secrets, whatever the producer put in the message.

    Producers that are not ours may send ``argsrepr`` with a whole spec in it;
    the worker replaces it before it reaches events (Flower), logs or ``inspect``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr, self._kwargsrepr = args_repr(self.args or (), self.kwargs or {})


# The scheduling tick: beat runs it itself (workers.tasks.TickScheduler), never through the queue.
TICK_TASK = "tokenkeeper.schedule_refreshes"


def create_celery(settings: Settings) -> Celery:
    app = Celery("tokenkeeper", include=["workers.tasks"])
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        # JSON only: task messages come from other services and must never be unpickled.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_expires=settings.result_expires,
        # Args and kwargs would land in the result backend with this on; they may hold secrets.
        result_extended=False,
        task_default_queue=settings.queue,
        task_routes={"tokenkeeper.*": {"queue": settings.queue}},
        # Redis redelivers a message not acked within visibility_timeout. Countdown
        # tasks are held unacked until due, so it must exceed the scheduling horizon
        # (checked in config); result backend and broker must agree on it.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        # Flower shows what workers announce. No "task-sent" events: a producer would
        # announce the argument text it computed itself, before any redaction of ours.
        worker_send_task_events=True,
        task_send_sent_event=False,
        beat_schedule={
            "tokenkeeper-schedule-refreshes": {
                "task": TICK_TASK,
                "schedule": settings.schedule_interval,
                # Should it ever travel as a message: a tick older than two intervals is worthless.
                "options": {"expires": settings.schedule_interval * 2, "queue": settings.queue},
            }
        },
        # Beat runs the tick in its own process, where a saturated worker pool cannot starve it.
        beat_scheduler="workers.tasks:TickScheduler",
        beat_schedule_filename=str(Path(settings.data_dir) / "celerybeat-schedule"),
        task_create_missing_queues=True,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport = "workers.ops.broker_transport:Transport"
    if settings.redis_sentinel_master:
        # Celery's own Sentinel support: broker and result backend follow the master through failovers.
        for options in (app.conf.broker_transport_options, app.conf.result_backend_transport_options):
            options["master_name"] = settings.redis_sentinel_master
    app.conf.tokenkeeper_settings = settings
    return app


@signals.before_task_publish.connect
def _redact_published_arguments(
    sender: str | None = None, headers: dict[str, Any] | None = None, body: Any = None, **_: Any
) -> None:
    """Messages of ours sent by any client built here carry a secret-free argsrepr."""
    if not sender or not sender.startswith("tokenkeeper.") or headers is None:
        return
    if isinstance(body, (list, tuple)) and len(body) >= 2:
        headers["argsrepr"], headers["kwargsrepr"] = args_repr(body[0] or (), body[1] or {})


@signals.before_task_publish.connect
def _propagate_trace(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Messages of ours carry the sender's span (W3C traceparent), so the worker's span continues its trace."""
    if sender and sender.startswith("tokenkeeper.") and headers is not None:
        tracing.inject(headers)


def settings_of(app: Celery) -> Settings:
    """The settings ``app`` was built from by :func:`create_celery`."""
    settings = app.conf.get("tokenkeeper_settings")
    if not isinstance(settings, Settings):
        raise ConfigurationError(f"Celery app {app.main!r} was not built by workers.celery_app.create_celery")
    return settings


def __getattr__(name: str) -> Celery:
    # `celery -A workers.celery_app` asks for `app`: only then are the settings read.
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = create_celery(load_settings(local_environ(os.environ)))
    globals()["app"] = app
    return app


def _own_settings(app: Celery) -> Settings | None:
    # The handlers below are connected for every app in the process; they act only for ours.
    settings = app.conf.get("tokenkeeper_settings")
    return settings if isinstance(settings, Settings) else None


@signals.worker_init.connect
def _require_secret_key(sender: Any = None, **_: Any) -> None:
    settings = _own_settings(sender.app)
    if settings is not None and not settings.secret_keys:
        raise SystemExit(
            "TOKENKEEPER_SECRET_KEY is not set: workers need it to seal and open secrets "
            "(create one with `tokenkeeper genkey`)"
        )


@signals.worker_init.connect
def _set_up_tracing(sender: Any = None, **_: Any) -> None:
    # In the main process, before the pool forks: its children inherit the tracer provider.
    settings = _own_settings(sender.app)
    if settings is not None:
        try:
            tracing.setup(settings)
        except ConfigurationError as exc:
            raise SystemExit(str(exc)) from None


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _flush_traces(**_: Any) -> None:
    # A pool child may end without running exit handlers: its last spans go out first.
    tracing.flush()


@signals.celeryd_after_setup.connect
def _consume_refresh_queue(sender: Any = None, instance: Any = None, **_: Any) -> None:
    # Added whatever -Q says: a worker started with `-Q tokenkeeper` (as the docs long said) must not
    # leave the scheduled refreshes unconsumed.
    settings = _own_settings(instance.app) if instance is not None else None
    if settings is not None:
        instance.app.amqp.queues.select_add(settings.refresh_queue)


@signals.beat_init.connect
def _make_data_dir(sender: Any = None, **_: Any) -> None:
    settings = _own_settings(sender.app)
    if settings is not None:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _configure_logs(logger: logging.Logger, loglevel: int | str | None = None, **_: Any) -> None:
    # Celery sends these without a sender; the app setting up logs is the process's current one.
    settings = _own_settings(current_app)
    if settings is None:
        return
    debug = loglevel in (logging.DEBUG, "DEBUG")
    configure(logger, json_lines=settings.log_format == "json", quiet_routine=not debug)
