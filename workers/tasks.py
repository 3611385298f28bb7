"""The Celery tasks of docs/contract.md: each one line of delegation to a domain object.

Names are stable. Arguments are JSON: names and specs in, small secret-free
dicts out. Errors of ours are ``throws``: expected, stored as the task's
failure, logged without a traceback.

The tasks are shared: they bind to whichever app the process built (the
worker's, from ``celery -A workers.celery_app``) and reach the settings through
it, so importing this module reads no settings.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task, current_app, shared_task
from celery.beat import PersistentScheduler

from workers.celery_app import TICK_TASK, RedactedRequest, settings_of
from workers.engine.authorization import Authorizations
from workers.engine.planning import Planner
from workers.engine.refresher import Refresher, RefreshResult
from workers.engine.registry import Registry, failure
from workers.engine.runtime import Runtime, build_runtime
from workers.engine.scheduler import dispatch_due, measure_capacity
from workers.errors import SpecError, TokenkeeperError, WebhookError
from workers.ops import tracing
from workers.ops.notifications import Event, forward_events, send
from workers.ops.redaction import args_repr

log = logging.getLogger(__name__)

# How long a "refresh is under way" answer waits before a scheduled refresh looks again.
BUSY_RETRY_SECONDS = 1.0


_runtimes: weakref.WeakKeyDictionary[Celery, Runtime] = weakref.WeakKeyDictionary()
_runtimes_lock = threading.Lock()


def runtime() -> Runtime:
    """The runtime for the settings of the app running this task, built once per app."""
    return runtime_of(current_app._get_current_object())


def runtime_of(app: Celery) -> Runtime:
    """The runtime for the settings of ``app``, built once per app."""
    # Built on first use, inside the worker process (after prefork's fork).
    with _runtimes_lock:
        found = _runtimes.get(app)
        if found is None:
            found = _runtimes[app] = build_runtime(settings_of(app))
        return found


class TokenkeeperTask(Task):
    Request = RedactedRequest
    throws = (TokenkeeperError,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Each run is one span, continuing the trace its message's headers name (the sender's span).
        # self.run as Celery's docs show for custom task classes: Task.__call__ would push a second
        # request, without the message's retries and headers.
        with tracing.running(self.name, self.request.id, args, self._header) as span:
            result = self.run(*args, **kwargs)
            span.finish(result)
            return result

    def _header(self, name: str) -> object:
        return getattr(self.request, name, None)


def _task(name: str, **options: Any) -> Any:
    return shared_task(name=name, base=TokenkeeperTask, **options)


@_task("tokenkeeper.create_integration")
def create_integration(spec: dict[str, Any]) -> dict[str, str]:
    return Registry(runtime()).create(spec)


# A bulk creation's task: big enough to share its round trips, small enough to answer within seconds.
MAX_CREATIONS_PER_TASK = 1000


@_task("tokenkeeper.create_integrations")
def create_integrations(specs: list[Any]) -> list[dict[str, str]]:
    """Many creations, each on its own: one outcome per spec, in order (a summary, or its name and error)."""
    if not isinstance(specs, list) or len(specs) > MAX_CREATIONS_PER_TASK:
        raise SpecError(f"create_integrations takes a list of at most {MAX_CREATIONS_PER_TASK} specs")
    outcomes = Registry(runtime()).create_many(specs)
    for spec, outcome in zip(specs, outcomes, strict=True):
        if isinstance(outcome, Exception) and not isinstance(outcome, TokenkeeperError):
            log.error("creating %s failed: %s", failure(spec, outcome)["name"], type(outcome).__name__)
    return [failure(spec, o) if isinstance(o, Exception) else o for spec, o in zip(specs, outcomes, strict=True)]


# A plan validates specs, which may fetch an issuer's metadata: bounded, so a file of slow issuers cannot hold
# a worker for long.
PLAN_TIME_LIMIT = 300


@_task("tokenkeeper.plan_integrations", soft_time_limit=PLAN_TIME_LIMIT, time_limit=PLAN_TIME_LIMIT + 30)
def plan_integrations(specs: list[Any], project: str, prune: bool = False, adopt: bool = False) -> dict[str, Any]:
    """What applying a file of specs would change (``tokenkeeper plan``): field names only, never values."""
    if not isinstance(specs, list) or not isinstance(project, str):
        raise SpecError("plan_integrations takes a list of specs and a project name")
    return Planner(runtime()).plan(specs, project, bool(prune), bool(adopt)).as_dict()


@_task("tokenkeeper.update_integration")
def update_integration(name: str, changes: dict[str, Any]) -> dict[str, str]:
    return Registry(runtime()).update(name, changes)


@_task("tokenkeeper.delete_integration")
def delete_integration(name: str) -> dict[str, Any]:
    return Registry(runtime()).delete(name)


# No retries, no acks_late: an authorization code is single-use, so it is sent once.
@_task("tokenkeeper.complete_authorization")
def complete_authorization(exchange_id: str) -> dict[str, Any]:
    return Authorizations(runtime()).exchange(exchange_id)


# acks_late + reject_on_worker_lost: a refresh whose worker process died goes
# back to the queue at once; the lock and version check make running it twice safe.
@_task("tokenkeeper.refresh_integration", acks_late=True, reject_on_worker_lost=True)
def refresh_integration(name: str, planned_at: float | None = None) -> dict[str, str]:
    rt = runtime()
    result = Refresher(rt).refresh(name, planned_at=planned_at)
    _trace_refreshes(rt, [name], [result])
    if result.outcome == "busy" and planned_at is not None:
        # The holder may die with the lock; look again once it could have expired.
        enqueue_refresh([(name, planned_at)], BUSY_RETRY_SECONDS)
    return result.as_dict()


@_task("tokenkeeper.refresh_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def refresh_batch(items: list[list[Any]]) -> int:
    """Scheduled refreshes that start together: [[name, planned_at], ...]. Internal to the scheduler."""
    rt = runtime()
    results = Refresher(rt).refresh_batch([(name, planned_at) for name, planned_at in items])
    _trace_refreshes(rt, [name for name, _ in items], results)
    # The holder may die with the lock; look again once it could have expired.
    busy = [
        (r.name, planned_at) for r, (_, planned_at) in zip(results, items, strict=True) if r and r.outcome == "busy"
    ]
    if busy:
        enqueue_refresh(busy, BUSY_RETRY_SECONDS)
    return sum(1 for result in results if result is not None and result.written)


def _trace_refreshes(rt: Runtime, names: Sequence[str], results: Sequence[RefreshResult | None]) -> None:
    """A ``refresh`` span per integration, children of the task's span (when it is traced)."""
    if not tracing.current().recording:
        return
    # The results' times are on the shared clock (Redis TIME); spans are on this process's.
    shift = time.time() - rt.clock()
    for name, result in zip(names, results, strict=True):
        if result is None:
            tracing.refreshed(name, grant_type="", outcome="failed", detail="not carried out (see the worker's log)")
            continue
        tracing.refreshed(
            result.name,
            grant_type=result.grant_type,
            outcome=result.outcome,
            status=result.status,
            detail=result.detail,
            started=None if result.requested_at is None else result.requested_at + shift,
            duration=result.duration,
        )


def tick(app: Celery) -> int:
    """One scheduling tick: mark it, hand on status changes, queue the refreshes coming due."""
    rt = runtime_of(app)
    rt.store.mark_tick(rt.clock())
    if rt.webhook is not None:
        forward_events(rt.store, enqueue_notification)
    # Measured before the claim, which queues again the refreshes waiting longest (presumed lost).
    capacity = measure_capacity(
        rt.store, now=rt.clock(), lost_after=rt.settings.lost_after, patience=rt.settings.capacity_patience
    )
    if capacity.exceeded:
        log.warning("%s", capacity.problem)
    return dispatch_due(
        rt.store,
        enqueue_refresh,
        now=rt.clock(),
        horizon=rt.settings.schedule_horizon,
        lost_after=rt.settings.lost_after,
        max_rate=rt.settings.max_refresh_rate,
        margin=rt.settings.deadline_margin,
    )


# Beat runs the tick itself (TickScheduler); the task stays for a message an older beat queued.
@_task(TICK_TASK, ignore_result=True)
def schedule_refreshes() -> int:
    return tick(current_app._get_current_object())


class TickScheduler(PersistentScheduler):
    """Beat's scheduler, running the scheduling tick in beat's own process.

    Sent as a task, the tick waited in the queue behind refreshes and for a free pool
    process: a pool saturated by hanging providers starved it, and the tick is the only
    place lost refreshes are queued again. Here nothing a worker does can delay it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The refreshes the tick queues are published through the current app: beat's.
        self.app.set_current()
        self.index_checked = False

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        if entry.task != TICK_TASK:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        if advance:
            self.reserve(entry)
        if not self.index_checked:
            # At the first tick rather than in __init__: by now beat's logging is set up.
            self.index_checked = True
            build_index_if_missing(self.app)
        try:
            tick(self.app)
        except Exception as exc:  # noqa: BLE001 -- beat must live on; the next tick tries again
            # The type only (a Redis error's text may carry a URL); the next tick tries again.
            log.error("scheduling tick failed: %s", type(exc).__name__)
        return None


def build_index_if_missing(app: Celery) -> threading.Thread | None:
    """File a store from before the operators' index (lua/index.lua) in the background, at beat's first tick.

    Beat runs once per deployment, so this is the migration nobody has to remember; refreshes go on
    meanwhile (the rebuild is short atomic batches, and writes file what they change themselves).
    ``tokenkeeper reindex`` does the same by hand.
    """
    try:
        store = runtime_of(app).store
        if store.index.complete():
            return None
    except Exception as exc:  # noqa: BLE001 -- beat must start; the status page says the index is short
        log.error("cannot check the operators' index: %s", type(exc).__name__)
        return None

    def build() -> None:
        log.warning("the operators' index is incomplete (a store from before it?): building it now")
        try:
            rebuilt = store.index.rebuild()
        except Exception as exc:  # noqa: BLE001 -- logged; `tokenkeeper reindex` finishes it
            log.error("building the operators' index failed: %s; run `tokenkeeper reindex`", type(exc).__name__)
            return
        log.info("the operators' index is built: %d filed, %d removed", rebuilt.filed, rebuilt.removed)

    thread = threading.Thread(target=build, name="tokenkeeper-index", daemon=True)
    thread.start()
    return thread


# Ten retries with the refresh backoff (capped at TOKENKEEPER_BACKOFF_MAX) ride out a receiver's
# restart or a short outage; a 4xx is the receiver refusing, and retrying cannot change that.
@_task("tokenkeeper.notify_status_change", bind=True, max_retries=10, acks_late=True, ignore_result=True)
def notify_status_change(self: Task, event: Event) -> None:
    rt = runtime()
    if rt.webhook is None:
        return
    last_try = self.request.retries >= self.max_retries
    try:
        send(rt.webhook, rt.store, event, last_try=last_try)
    except WebhookError as exc:
        if not exc.retryable or last_try:
            log.warning("status change %s not delivered: %s", event.get("id"), exc)
            raise
        raise self.retry(countdown=rt.policy.retry_delay(self.request.retries + 1, exc.retry_after)) from None
    log.info("status change %s delivered", event.get("id"))


def enqueue_notification(event: Event) -> None:
    notify_status_change.apply_async([event], ignore_result=True)


def enqueue_refresh(items: list[tuple[str, float]], countdown: float) -> None:
    args = [[[name, planned_at] for name, planned_at in items]]
    argsrepr, kwargsrepr = args_repr(args, {})
    # The ETA on the shared clock, not countdown: Celery adds a countdown to the publisher's own
    # clock, and a beat 300 s fast would have every worker hold its refreshes 300 s too long.
    rt = runtime()
    refresh_batch.apply_async(
        args,
        # Their own queue: behind a bulk of producers' creations in the main one they would go out late.
        queue=rt.settings.refresh_queue,
        eta=datetime.fromtimestamp(rt.clock() + countdown, tz=UTC),
        ignore_result=True,
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
    )
