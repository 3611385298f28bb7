"""Traces (OpenTelemetry): every OpenTelemetry call of tokenkeeper is in this module.

Spans: ``send <task>`` where a producer publishes one of our tasks (kind producer); ``run <task>``
where a worker runs it (kind consumer), a child of the sender's span through the message's W3C
``traceparent`` header (:func:`inject` on the way out, :func:`running` on the way in); ``refresh``,
one per integration a task refreshed, a child of the task's span; ``GET /oauth/authorize/<name>`` and
``GET /oauth/callback`` in the callback app (kind server).

Attributes say which integration (``tokenkeeper.integration``), its grant type, the task, and the
outcome (``tokenkeeper.outcome``: refreshed, retrying, needs_reauth, busy, active, …), never a secret:
values are our own words, counts, or names that match the integration name pattern. An error's text
is ours (a :class:`TokenkeeperError`, secret-free by contract) or only its type; a failed refresh's is
its reason, as the status page shows it (scrubbed of our secrets). No exception is recorded as an
event: its text and traceback may quote what a provider sent.

The extra ``otel`` brings the OpenTelemetry API and SDK. Without it every function here does nothing.
With it and ``TOKENKEEPER_TRACING=true``, :func:`setup` gives the process the SDK's tracer provider,
exporting by OTLP over HTTP and configured by the standard ``OTEL_*`` variables (read by the SDK); a
process that has a provider already (a producer service's own, ``opentelemetry-instrument``) keeps
it, and our spans go there.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from config import Settings
from workers.errors import ConfigurationError, TokenkeeperError

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: nothing is traced
    INSTALLED = False
else:
    INSTALLED = True

log = logging.getLogger(__name__)

# The only free text a span may carry besides our own words: names as an integration's must be.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# The tasks whose first argument is an integration's name.
_NAMED_TASKS = frozenset(
    {"tokenkeeper.update_integration", "tokenkeeper.delete_integration", "tokenkeeper.refresh_integration"}
)
# Outcomes where the provider's answer was a failure: the span's status is an error.
_FAILED = frozenset({"retrying", "needs_reauth", "failed"})
# Longest status description: enough for our error messages, not for a provider's whole page.
_MAX_DESCRIPTION = 300
DEFAULT_SERVICE_NAME = "tokenkeeper"

_setup_lock = threading.Lock()
_set_up = False


class Traced:
    """The span a block runs in, or none when nothing is traced: what tokenkeeper may say about it."""

    def __init__(self, span: Span | None = None) -> None:
        self._span = span if span is not None and span.is_recording() else None

    @property
    def recording(self) -> bool:
        return self._span is not None

    def describe(self, *, integration: object = None, grant_type: object = None, provider: object = None) -> None:
        """Which integration: each value only if it looks like a name (anything else is left out)."""
        if self._span is not None:
            self._span.set_attributes(_names(integration=integration, grant_type=grant_type, provider=provider))

    def outcome(self, outcome: str, *, status: str = "", failure: str = "") -> None:
        """What came of it; ``failure`` (our secret-free words) marks the span an error."""
        if self._span is None:
            return
        self._span.set_attribute("tokenkeeper.outcome", outcome)
        if status:
            self._span.set_attribute("tokenkeeper.status", status)
        if failure or outcome in _FAILED:
            self._span.set_status(Status(StatusCode.ERROR, (failure or outcome)[:_MAX_DESCRIPTION]))

    def finish(self, result: object) -> None:
        """The outcome of a task from its result: a refresh's outcome, a creation's status, a deletion."""
        if self._span is None or not isinstance(result, Mapping):
            return
        self.describe(integration=result.get("name"))
        status = str(result.get("status") or "")
        if result.get("outcome"):
            failure = str(result.get("detail") or "") if result["outcome"] in _FAILED else ""
            self.outcome(str(result["outcome"]), status=status, failure=failure)
        elif result.get("deleted"):
            self.outcome("deleted")
        elif status:
            self.outcome(status, status=status)

    def sent(self, task_id: str) -> None:
        """The id of the message a producer's span sent."""
        if self._span is not None:
            self._span.set_attribute("messaging.message.id", task_id)

    def fail(self, exc: BaseException) -> None:
        if self._span is None:
            return
        self._span.set_attributes({"tokenkeeper.outcome": "failed", "error.type": type(exc).__name__})
        self._span.set_status(Status(StatusCode.ERROR, describe_error(exc)))


NOT_TRACED = Traced()


def describe_error(exc: BaseException) -> str:
    """An error in words a span may carry: ours say what is wrong without secrets; anyone else's only its type."""
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, TokenkeeperError) else type(exc).__name__
    return text[:_MAX_DESCRIPTION]


def setup(settings: Settings) -> bool:
    """With ``TOKENKEEPER_TRACING=true``, give this process the SDK's tracer provider (OTLP over HTTP).

    Once per process; a process that has a provider already keeps it. True when one was installed.
    Forked children (the worker's pool, gunicorn's workers) inherit it: the SDK restarts its export
    thread after a fork.
    """
    global _set_up
    if not settings.tracing:
        return False
    with _setup_lock:
        if _set_up:
            return False
        _set_up = True
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            _set_up = False
            raise ConfigurationError(
                "TOKENKEEPER_TRACING=true needs the otel extra: pip install -e '.[otel]' "
                "(or TOKENKEEPER_EXTRAS=otel scripts/up)"
            ) from None
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            log.info("tracing: this process has a tracer provider already; our spans go to it")
            return False
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; without them the SDK would say "unknown_service".
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        return True


def flush(timeout: float = 5.0) -> None:
    """Export the spans still buffered: before a process that may skip exit handlers (a pool child) ends."""
    if not INSTALLED:
        return
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(int(timeout * 1000))


def inject(headers: dict[str, Any]) -> None:
    """Put the current span's context (``traceparent``) in an outgoing message's headers."""
    if _live():
        propagate.inject(headers)


@contextmanager
def sending(task: str, args: Sequence[Any]) -> Iterator[Traced]:
    """The producer's span around publishing ``task``: a parent for the worker's (see :func:`inject`)."""
    with _span(f"send {task}", "producer", task_attributes(task, args)) as traced:
        yield traced


@contextmanager
def running(task: str, task_id: str | None, args: Sequence[Any], header: Callable[[str], object]) -> Iterator[Traced]:
    """A worker's span around running ``task``, continuing the trace its message's headers name.

    ``header(name)``: the message header ``name`` (``traceparent``, ``tracestate``), or None.
    """
    if not _live():
        yield NOT_TRACED
        return
    attributes = task_attributes(task, args)
    if task_id:
        attributes["messaging.message.id"] = task_id
    with _span(f"run {task}", "consumer", attributes, _extracted(header)) as traced:
        yield traced


@contextmanager
def serving(route: str, header: Callable[[str], object]) -> Iterator[Traced]:
    """The callback app's span around one request to ``route`` (``GET /oauth/callback``)."""
    if not _live():
        yield NOT_TRACED
        return
    method, _, path = route.partition(" ")
    attributes: dict[str, Any] = {"http.request.method": method, "http.route": path}
    with _span(route, "server", attributes, _extracted(header)) as traced:
        yield traced


def current() -> Traced:
    """The span the caller runs in (a task's, a request's)."""
    return Traced(trace.get_current_span()) if _live() else NOT_TRACED


def refreshed(
    name: str,
    *,
    grant_type: str,
    outcome: str,
    status: str = "",
    detail: str = "",
    started: float | None = None,
    duration: float | None = None,
) -> None:
    """A ``refresh`` span for one integration, a child of the current span, recorded after the fact.

    ``started`` (Unix seconds, this process's clock) and ``duration``: the token request, when one was
    made; otherwise the span marks the moment its outcome was known.
    """
    if not _live() or not trace.get_current_span().is_recording():
        return
    start_ns = None if started is None else int(started * 1e9)
    span = _TRACER.start_span("refresh", kind=SpanKind.INTERNAL, start_time=start_ns)
    traced = Traced(span)
    traced.describe(integration=name, grant_type=grant_type)
    traced.outcome(outcome, status=status, failure=detail if outcome in _FAILED else "")
    span.end(None if start_ns is None or duration is None else start_ns + int(duration * 1e9))


def task_attributes(task: str, args: Sequence[Any]) -> dict[str, Any]:
    """What a span may say about a task's arguments: its integration's name and grant type, a batch's size."""
    attributes: dict[str, Any] = {"tokenkeeper.task": task}
    first = args[0] if args else None
    if task == "tokenkeeper.create_integration" and isinstance(first, Mapping):
        attributes.update(
            _names(integration=first.get("name"), grant_type=first.get("grant_type"), provider=first.get("provider"))
        )
    elif task in _NAMED_TASKS:
        attributes.update(_names(integration=first))
    elif isinstance(first, list) and task in ("tokenkeeper.create_integrations", "tokenkeeper.refresh_batch"):
        attributes["tokenkeeper.batch_size"] = len(first)
    return attributes


def _names(**values: object) -> dict[str, str]:
    return {
        f"tokenkeeper.{key}": value
        for key, value in values.items()
        if isinstance(value, str) and _NAME.fullmatch(value)
    }


if INSTALLED:
    # A proxy: spans go to whichever provider the process has when they start (setup may come later).
    _TRACER = trace.get_tracer("tokenkeeper")
    _KINDS = {
        "producer": SpanKind.PRODUCER,
        "consumer": SpanKind.CONSUMER,
        "server": SpanKind.SERVER,
        "internal": SpanKind.INTERNAL,
    }


def _live() -> bool:
    """Whether spans can be recorded: the extra is installed and the process has a tracer provider (ours or
    its own). Checked on every span, so one installed after our import counts; without one nothing is done."""
    return INSTALLED and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _extracted(header: Callable[[str], object]) -> Any:
    carrier = {}
    for field in propagate.get_global_textmap().fields:
        value = header(field)
        if isinstance(value, str):
            carrier[field] = value
    return propagate.extract(carrier) if carrier else None


@contextmanager
def _span(name: str, kind: str, attributes: dict[str, Any], context: Any = None) -> Iterator[Traced]:
    if not _live():
        yield NOT_TRACED
        return
    # Not recorded: an exception's text and traceback. Its type and our words are, by fail().
    with _TRACER.start_as_current_span(
        name,
        context=context,
        kind=_KINDS[kind],
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        traced = Traced(span)
        try:
            yield traced
        except BaseException as exc:
            traced.fail(exc)
            raise
