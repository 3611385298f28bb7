"""Traces end to end: a producer's span, a real prefork worker's spans (exported by OTLP/HTTP), the callback app's.

The test process records its spans (producer, callback app) with the SDK's in-memory exporter; the
worker runs with TOKENKEEPER_TRACING=true and exports to a receiver on 127.0.0.1, as it would to a
collector. Both are searched for every secret the test used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from celery import Celery
from flask.testing import FlaskClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.collector import Collector, ExportedSpan
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import TokenServer
from workers.engine.links import link_token
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime
from workers.producer import call, send

pytestmark = pytest.mark.e2e

CLIENT_SECRET = "traces-client-secret-9f3c"
CODE = "traces-authorization-code-77a1"


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer(clients={"client-id": CLIENT_SECRET}).start()
    yield server
    server.stop()


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def process_env(environ: dict[str, str], collector: Collector) -> dict[str, str]:
    """Workers and beat with tracing on, exporting to the test's receiver within 50 ms of a span's end."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(("TOKENKEEPER_", "OTEL_"))}
    return {
        **inherited,
        **environ,
        "TOKENKEEPER_TRACING": "true",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def named(spans: Sequence[ExportedSpan], name: str, **attributes: Any) -> list[ExportedSpan]:
    return [
        span
        for span in spans
        if span.name == name and all(span.attributes.get(key) == value for key, value in attributes.items())
    ]


def the_local(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [span for span in spans.get_finished_spans() if span.name == name]
    assert len(found) == 1, [span.name for span in spans.get_finished_spans()]
    return found[0]


def texts(local: Sequence[ReadableSpan], exported: Sequence[ExportedSpan]) -> list[str]:
    """Every text a trace backend would be shown: names, attribute values, events, status messages, resources."""
    found: list[str] = []
    for span in local:
        found += [span.name, span.status.description or "", *map(str, (span.attributes or {}).values())]
        found += [f"{event.name} {dict(event.attributes or {})}" for event in span.events]
    for exported_span in exported:
        found += [exported_span.name, exported_span.status_message, *map(str, exported_span.attributes.values())]
        found += [f"{name} {attributes}" for name, attributes in exported_span.events]
        found += [str(value) for value in exported_span.resource.values()]
    return found


def secrets_of(server: TokenServer) -> list[str]:
    """The client secret, and every refresh and access token the token server handed out."""
    with server.lock:
        return [CLIENT_SECRET, *server.live_refresh, *server.spent_refresh, *server.access]


def assert_secret_free(local: Sequence[ReadableSpan], exported: Sequence[ExportedSpan], secrets: list[str]) -> None:
    assert len(secrets) > 1
    leaked = [(secret, text) for text in texts(local, exported) for secret in secrets if secret in text]
    assert leaked == []


def test_a_creation_is_one_trace_from_the_producer_to_the_worker(
    token_server: TokenServer,
    start_processes: Callable[..., Any],
    celery_client: Celery,
    local_spans: InMemorySpanExporter,
    collector: Collector,
) -> None:
    """The worker's create span is the producer's send span's child in the same trace, and says which integration,
    its grant type and the outcome; a refused creation is an error span naming the error, not the secret."""
    start_processes("worker")
    pending = send(
        celery_client, "tokenkeeper.create_integration", cc_spec(token_server, "billing", client_secret=CLIENT_SECRET)
    )
    assert pending.get(timeout=20)["status"] == "active"

    sent = the_local(local_spans, "send tokenkeeper.create_integration")
    run = collector.wait_for(
        lambda spans: named(spans, "run tokenkeeper.create_integration"), 20, "the worker's create span"
    )[0]
    assert sent.kind == SpanKind.PRODUCER and run.kind == "consumer"
    assert run.trace_id == hex_trace(sent) and run.parent_id == hex_span(sent)
    assert dict(sent.attributes or {}) == {
        "tokenkeeper.task": "tokenkeeper.create_integration",
        "tokenkeeper.integration": "billing",
        "tokenkeeper.grant_type": "client_credentials",
        "messaging.message.id": pending.id,
    }
    assert run.attributes == {
        "tokenkeeper.task": "tokenkeeper.create_integration",
        "tokenkeeper.integration": "billing",
        "tokenkeeper.grant_type": "client_credentials",
        "messaging.message.id": pending.id,
        "tokenkeeper.outcome": "active",
        "tokenkeeper.status": "active",
    }
    assert run.status == "unset" and run.resource["service.name"] == "tokenkeeper"

    with pytest.raises(Exception, match="invalid_client"):
        call(celery_client, "tokenkeeper.create_integration", cc_spec(token_server, "wrong", client_secret="nope-77"))
    refused = collector.wait_for(
        lambda spans: named(spans, "run tokenkeeper.create_integration", **{"tokenkeeper.integration": "wrong"}),
        20,
        "the refused creation's span",
    )[0]
    assert refused.status == "error" and "ProviderError: invalid_client" in refused.status_message
    assert refused.attributes["tokenkeeper.outcome"] == "failed"
    assert refused.attributes["error.type"].endswith("ProviderError")
    assert refused.events == []  # no exception event: its text and traceback are not ours to export
    assert_secret_free(local_spans.get_finished_spans(), collector.spans, [*secrets_of(token_server), "nope-77"])


def test_refreshes_are_spans_with_name_grant_type_and_outcome(
    token_server: TokenServer,
    start_processes: Callable[..., Any],
    celery_client: Celery,
    local_spans: InMemorySpanExporter,
    collector: Collector,
) -> None:
    """A forced refresh is a refresh span under its task's span, outcome refreshed; after the refresh token is
    revoked it is needs_reauth, an error span saying invalid_grant; scheduled refreshes are one span each, children
    of their batch's span. No span carries a secret or token."""
    start_processes("worker")
    call(celery_client, "tokenkeeper.create_integration", rt_spec(token_server, "user", client_secret=CLIENT_SECRET))
    assert call(celery_client, "tokenkeeper.refresh_integration", "user")["outcome"] == "refreshed"
    with token_server.lock:
        token_server.live_refresh.clear()  # the provider revoked it: the next refresh gets invalid_grant
    assert call(celery_client, "tokenkeeper.refresh_integration", "user")["outcome"] == "needs_reauth"

    refreshes = collector.wait_for(
        lambda spans: (
            len(named(spans, "refresh", **{"tokenkeeper.integration": "user"})) == 2
            and named(spans, "refresh", **{"tokenkeeper.integration": "user"})
        ),
        20,
        "both refresh spans",
    )
    runs = {span.span_id: span for span in named(collector.spans, "run tokenkeeper.refresh_integration")}
    sends = {hex_span(span): span for span in local_spans.get_finished_spans()}
    by_outcome = {span.attributes["tokenkeeper.outcome"]: span for span in refreshes}
    assert set(by_outcome) == {"refreshed", "needs_reauth"}
    for refresh in refreshes:
        run = runs[refresh.parent_id]  # a child of its task's span...
        assert sends[run.parent_id].name == "send tokenkeeper.refresh_integration"  # ...which the producer's sent
        assert refresh.trace_id == run.trace_id == hex_trace(sends[run.parent_id])
        assert refresh.attributes["tokenkeeper.grant_type"] == "refresh_token"
        assert run.start_ns <= refresh.start_ns <= refresh.end_ns <= run.end_ns  # the token request, timed
    assert by_outcome["refreshed"].status == "unset"
    reauth = by_outcome["needs_reauth"]
    assert reauth.status == "error" and reauth.status_message.startswith("invalid_grant")
    assert reauth.attributes["tokenkeeper.status"] == "needs_reauth"
    assert runs[reauth.parent_id].attributes["tokenkeeper.outcome"] == "needs_reauth"

    # Scheduled: beat queues batches of refreshes; each integration's span is a child of its batch's.
    names = ["cc1", "cc2", "cc3"]
    for name in names:
        call(celery_client, "tokenkeeper.create_integration", cc_spec(token_server, name, client_secret=CLIENT_SECRET))
    start_processes("beat")

    def scheduled(spans: list[ExportedSpan]) -> list[ExportedSpan]:
        batches = {span.span_id for span in named(spans, "run tokenkeeper.refresh_batch")}
        found = [span for span in named(spans, "refresh") if span.parent_id in batches]
        return found if {span.attributes["tokenkeeper.integration"] for span in found} >= set(names) else []

    found = collector.wait_for(scheduled, 30, "a scheduled refresh span for each integration")
    batches = {span.span_id: span for span in named(collector.spans, "run tokenkeeper.refresh_batch")}
    for span in found:
        assert span.attributes["tokenkeeper.grant_type"] == "client_credentials"
        assert (
            span.attributes["tokenkeeper.outcome"] == "refreshed" and span.trace_id == batches[span.parent_id].trace_id
        )
    for batch_id in {span.parent_id for span in found}:
        children = [span for span in named(collector.spans, "refresh") if span.parent_id == batch_id]
        assert len(children) == batches[batch_id].attributes["tokenkeeper.batch_size"]
    assert_secret_free(local_spans.get_finished_spans(), collector.spans, secrets_of(token_server))


def test_an_authorization_is_traced_from_the_callback_to_the_code_exchange(
    token_server: TokenServer,
    runtime: Runtime,
    client: FlaskClient,
    start_processes: Callable[..., Any],
    local_spans: InMemorySpanExporter,
    collector: Collector,
) -> None:
    """/oauth/authorize and /oauth/callback are server spans naming the integration; the worker's code exchange
    is in the callback's trace, outcome active; a refused link is an error span. No code, state or token shows."""
    start_processes("worker")
    spec = {
        "name": "drive",
        "grant_type": "authorization_code",
        "client_id": "client-id",
        "client_secret": CLIENT_SECRET,
        "token_url": token_server.url,
        "auth_url": "https://idp.example/auth",
    }
    Registry(runtime).create(spec)
    settings = client.application.extensions["tokenkeeper"]["settings"]
    link = link_token(settings, "drive", now=runtime.clock())
    redirect = client.get(f"/oauth/authorize/drive?t={link}")
    assert redirect.status_code == 302
    state = redirect.headers["Location"].split("state=")[1].split("&")[0]
    assert client.get(f"/oauth/callback?state={state}&code={CODE}").status_code == 200

    authorize = the_local(local_spans, "GET /oauth/authorize/<name>")
    callback = the_local(local_spans, "GET /oauth/callback")
    sent = the_local(local_spans, "send tokenkeeper.complete_authorization")
    assert authorize.kind == callback.kind == SpanKind.SERVER
    assert dict(authorize.attributes or {}) == {
        "http.request.method": "GET",
        "http.route": "/oauth/authorize/<name>",
        "tokenkeeper.integration": "drive",
        "tokenkeeper.grant_type": "authorization_code",
        "tokenkeeper.outcome": "redirected",
    }
    assert (callback.attributes or {})["tokenkeeper.outcome"] == "active"
    assert sent.parent is not None and sent.parent.span_id == callback.context.span_id  # type: ignore[union-attr]
    exchange = collector.wait_for(
        lambda spans: named(spans, "run tokenkeeper.complete_authorization"), 20, "the worker's code exchange span"
    )[0]
    assert exchange.trace_id == hex_trace(callback) and exchange.parent_id == hex_span(sent)
    assert exchange.attributes["tokenkeeper.integration"] == "drive"
    assert exchange.attributes["tokenkeeper.outcome"] == "active"

    flow = list(local_spans.get_finished_spans())
    local_spans.clear()
    assert client.get(f"/oauth/authorize/drive?t={link}x").status_code == 403
    refused = the_local(local_spans, "GET /oauth/authorize/<name>")
    assert refused.status.status_code == StatusCode.ERROR
    assert (refused.attributes or {})["error.type"] == "LinkError"
    assert (refused.attributes or {})["tokenkeeper.outcome"] == "failed"
    assert_secret_free([*flow, refused], collector.spans, [*secrets_of(token_server), CODE, state, link])
