"""workers.ops.tracing: spans say names and outcomes only, tracing is off unless asked, and nothing needs the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from config import Settings
from workers.errors import NotFoundError
from workers.ops import tracing

ROOT = Path(__file__).resolve().parents[4]

# Makes `import opentelemetry…` fail as it does where the otel extra is not installed.
WITHOUT_THE_EXTRA = """
import sys


class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, NoOpenTelemetry())
"""


def _run(script: str, **variables: str) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TOKENKEEPER_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, **variables},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_the_extra_everything_runs_untraced_and_asking_for_traces_says_what_to_install() -> None:
    """With opentelemetry not importable, the entry points import, a task runs through the traced task class,
    spans are no-ops, no header is added; TOKENKEEPER_TRACING=true stops the worker and the web app naming the extra."""
    found = _run(
        WITHOUT_THE_EXTRA
        + """
import json
from types import SimpleNamespace

import callback_app
import workers.producer
import workers.tasks
from config import Settings
from workers.celery_app import _set_up_tracing, create_celery
from workers.errors import ConfigurationError
from workers.ops import tracing

headers = {}
with tracing.sending("tokenkeeper.create_integration", [{"name": "svc"}]) as span:
    tracing.inject(headers)
    span.sent("id")
    span.finish({"name": "svc", "status": "active"})
app = create_celery(Settings())
app.conf.task_always_eager = True  # the task's body in this process: no broker needed to refuse a bad argument
refused = workers.tasks.create_integrations.apply(args=["not a list"])
try:
    callback_app.create_app(Settings(tracing=True))
    web = "started"
except ConfigurationError as exc:
    web = str(exc)
try:
    _set_up_tracing(sender=SimpleNamespace(app=create_celery(Settings(tracing=True))))
    worker = "started"
except SystemExit as exc:
    worker = str(exc)
print(json.dumps({
    "installed": tracing.INSTALLED,
    "recording": span.recording,
    "headers": headers,
    "task": type(refused.result).__name__,
    "web": web,
    "worker": worker,
    "off": tracing.setup(Settings()),
}))
"""
    )
    assert found["installed"] is False and found["recording"] is False and found["headers"] == {}
    assert found["task"] == "SpecError"
    assert found["off"] is False
    for refusal in (found["web"], found["worker"]):
        assert "TOKENKEEPER_TRACING=true needs the otel extra" in str(refusal) and ".[otel]" in str(refusal)


def test_setup_installs_the_sdk_only_when_asked_and_the_service_name_is_the_operators() -> None:
    """Tracing off: no provider. On: the SDK's provider, named tokenkeeper unless OTEL_SERVICE_NAME says otherwise;
    a second setup changes nothing."""
    script = """
import json
from opentelemetry import trace
from config import Settings
from workers.ops import tracing

off = tracing.setup(Settings())
untouched = isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
on = tracing.setup(Settings(tracing=True))
again = tracing.setup(Settings(tracing=True))
provider = trace.get_tracer_provider()
print(json.dumps({"off": off, "untouched": untouched, "on": on, "again": again,
                  "service": provider.resource.attributes["service.name"]}))
"""
    assert _run(script) == {"off": False, "untouched": True, "on": True, "again": False, "service": "tokenkeeper"}
    assert _run(script, OTEL_SERVICE_NAME="tokens-eu")["service"] == "tokens-eu"


def test_setup_keeps_a_provider_the_process_has(local_spans: InMemorySpanExporter, monkeypatch) -> None:
    """A process with a tracer provider (a producer service's own) keeps it: our spans go there."""
    monkeypatch.setattr(tracing, "_set_up", False)
    before = trace.get_tracer_provider()
    assert tracing.setup(Settings(tracing=True)) is False
    assert trace.get_tracer_provider() is before
    with tracing.sending("tokenkeeper.delete_integration", ["svc"]):
        pass
    assert [span.name for span in local_spans.get_finished_spans()] == ["send tokenkeeper.delete_integration"]


def test_task_attributes_name_the_integration_and_never_an_argument_else() -> None:
    """From a spec only its name, grant type and preset; from an update only the name; a batch only its size; an
    exchange id, a value that is not a name, and every secret field are left out."""
    spec = {
        "name": "crm",
        "grant_type": "refresh_token",
        "provider": "salesforce",
        "client_id": "id-123",
        "client_secret": {"sealed": "c2VjcmV0"},
        "refresh_token": "rt-plain",
    }
    assert tracing.task_attributes("tokenkeeper.create_integration", [spec]) == {
        "tokenkeeper.task": "tokenkeeper.create_integration",
        "tokenkeeper.integration": "crm",
        "tokenkeeper.grant_type": "refresh_token",
        "tokenkeeper.provider": "salesforce",
    }
    odd = {"name": "crm token=abc", "grant_type": ["x"]}
    assert tracing.task_attributes("tokenkeeper.create_integration", [odd]) == {
        "tokenkeeper.task": "tokenkeeper.create_integration"
    }
    assert tracing.task_attributes("tokenkeeper.update_integration", ["crm", {"client_secret": "s"}]) == {
        "tokenkeeper.task": "tokenkeeper.update_integration",
        "tokenkeeper.integration": "crm",
    }
    assert tracing.task_attributes("tokenkeeper.complete_authorization", ["exchange-id-Xy"]) == {
        "tokenkeeper.task": "tokenkeeper.complete_authorization"
    }
    assert (
        tracing.task_attributes("tokenkeeper.refresh_batch", [[["a", 1.0], ["b", 2.0]]])["tokenkeeper.batch_size"] == 2
    )


def test_an_error_span_carries_our_words_or_only_the_type(local_spans: InMemorySpanExporter) -> None:
    """Our error's message is the status; anyone else's error shows by type only; no exception event is recorded."""
    with pytest.raises(NotFoundError), tracing.sending("tokenkeeper.delete_integration", ["svc"]):
        raise NotFoundError("no integration named 'svc'")
    with pytest.raises(ValueError), tracing.sending("tokenkeeper.delete_integration", ["svc"]):
        raise ValueError("token=secret-in-a-library-message")
    ours, theirs = local_spans.get_finished_spans()
    assert ours.status.status_code == StatusCode.ERROR
    assert ours.status.description == "NotFoundError: no integration named 'svc'"
    assert theirs.status.description == "ValueError"
    assert (theirs.attributes or {})["error.type"] == "ValueError"
    assert ours.events == theirs.events == ()


def test_a_refresh_span_is_recorded_only_under_a_traced_task(local_spans: InMemorySpanExporter) -> None:
    """Outside any span nothing is recorded; under one, the refresh is its child, timed by its request, and an
    outcome the provider failed is an error span with the reason."""
    tracing.refreshed("lonely", grant_type="client_credentials", outcome="refreshed")
    assert local_spans.get_finished_spans() == ()
    with tracing.running("tokenkeeper.refresh_batch", "task-1", [[["a", 1.0], ["b", 2.0]]], lambda _: None):
        tracing.refreshed("a", grant_type="client_credentials", outcome="refreshed", started=100.0, duration=0.25)
        tracing.refreshed("b", grant_type="refresh_token", outcome="needs_reauth", detail="invalid_grant: revoked")
    a, b, batch = local_spans.get_finished_spans()
    assert a.parent is not None and b.parent is not None and batch.context is not None
    assert a.parent.span_id == b.parent.span_id == batch.context.span_id
    assert (a.start_time, a.end_time) == (100_000_000_000, 100_250_000_000)
    assert dict(b.attributes or {}) == {
        "tokenkeeper.integration": "b",
        "tokenkeeper.grant_type": "refresh_token",
        "tokenkeeper.outcome": "needs_reauth",
    }
    assert b.status.status_code == StatusCode.ERROR and b.status.description == "invalid_grant: revoked"
    assert a.status.status_code == StatusCode.UNSET
