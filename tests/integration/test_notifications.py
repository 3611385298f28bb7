"""Webhook notifications: every status change, recovery included, signed, delivered by a real worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.processes import CeleryProcess
from tests.support.specs import rt_spec
from tests.support.token_server import Canned, TokenServer
from tests.support.webhook_receiver import WebhookReceiver
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime
from workers.ops.notifications import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "webhook-test-secret"


@pytest.fixture
def webhook_env(environ: dict[str, str], receiver: WebhookReceiver) -> None:
    # Before settings, runtime and the worker processes are built from environ.
    environ["TOKENKEEPER_WEBHOOK_URL"] = receiver.url
    environ["TOKENKEEPER_WEBHOOK_SECRET"] = SECRET


def test_each_status_change_reaches_the_webhook_signed(
    webhook_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    receiver: WebhookReceiver,
    start_processes: Callable[..., CeleryProcess],
) -> None:
    """created, retrying, recovered, needs_reauth, recovered again: five events, each signed, none lost."""
    start_processes("worker")
    start_processes("beat")
    receiver.fail_next = 1  # the first delivery is refused with 503 and must be retried
    registry, refresher = Registry(runtime), Refresher(runtime)
    registry.create(rt_spec(token_server, "crm"))
    token_server.queue(Canned(status=503, body=b"busy"))
    assert refresher.refresh("crm").outcome == "retrying"
    # The retry the schedule makes (a forced refresh would wait for the backoff).
    assert refresher.refresh("crm", planned_at=runtime.store.load("crm").refresh_at).outcome == "refreshed"
    token_server.queue(
        Canned(status=400, body=b'{"error": "invalid_grant"}', headers={"Content-Type": "application/json"})
    )
    assert refresher.refresh("crm").outcome == "needs_reauth"
    registry.update("crm", {"refresh_token": token_server.new_refresh_token()})

    deliveries = sorted(receiver.take(5, timeout=60), key=lambda d: d.event["at"])
    transitions = [(d.event["old_status"], d.event["new_status"]) for d in deliveries]
    assert transitions == [
        (None, "active"),
        ("active", "retrying"),
        ("retrying", "active"),
        ("active", "needs_reauth"),
        ("needs_reauth", "active"),
    ]
    assert {d.event["name"] for d in deliveries} == {"crm"}
    assert "invalid_grant" in deliveries[3].event["reason"]
    for delivery in deliveries:
        headers = delivery.headers
        assert verify(SECRET, headers[TIMESTAMP_HEADER], delivery.body, headers[SIGNATURE_HEADER], time.time())
        assert not verify(
            "other-secret", headers[TIMESTAMP_HEADER], delivery.body, headers[SIGNATURE_HEADER], time.time()
        )
        assert headers[EVENT_ID_HEADER] == delivery.event["id"]
    assert len({d.event["id"] for d in deliveries}) == 5
    assert len(receiver.refused) == 1 and receiver.refused[0].event in [d.event for d in deliveries]
    # Nothing is left waiting and nothing more arrives.
    assert runtime.store.redis.llen(runtime.store.keys.outbox) == 0


def test_no_webhook_no_outbox(runtime: Runtime, token_server: TokenServer) -> None:
    """Without a webhook URL, status changes are not queued anywhere (nothing grows unread)."""
    Registry(runtime).create(rt_spec(token_server, "crm"))
    token_server.queue(Canned(status=503, body=b"busy"))
    Refresher(runtime).refresh("crm")
    assert runtime.store.redis.exists(runtime.store.keys.outbox) == 0


def test_event_ids_stay_unique_when_a_name_is_used_again(
    webhook_env: None,
    runtime: Runtime,
    token_server: TokenServer,
) -> None:
    """Delete and create again under the same name: the two creation events have different ids."""
    registry = Registry(runtime)
    registry.create(rt_spec(token_server, "crm"))
    registry.delete("crm")
    registry.create(rt_spec(token_server, "crm"))
    events = runtime.store.take_events(10)
    assert [event["new_status"] for event in events] == ["active", "active"]
    assert events[0]["id"] != events[1]["id"] and all(event["id"].startswith("crm:") for event in events)


def test_a_webhook_on_loopback_is_refused_unless_private_networks_are_allowed(
    environ: dict[str, str],
    receiver: WebhookReceiver,
) -> None:
    """The webhook URL passes the same address checks as token URLs: loopback only with the setting."""
    from config import load_settings
    from workers.engine.runtime import build_runtime
    from workers.errors import WebhookError

    environ.update({"TOKENKEEPER_WEBHOOK_URL": receiver.url, "TOKENKEEPER_WEBHOOK_SECRET": SECRET})
    strict = build_runtime(load_settings({**environ, "TOKENKEEPER_ALLOW_PRIVATE_NETWORKS": "false"}))
    assert strict.webhook is not None
    with pytest.raises(WebhookError) as caught:
        strict.webhook.deliver({"id": "e1", "name": "svc", "status": "active"})
    assert not caught.value.retryable and "127.0.0.1 is a loopback address" in str(caught.value)
    assert receiver.deliveries.empty() and receiver.refused == []
    allowed = build_runtime(load_settings(environ))
    allowed.webhook.deliver({"id": "e2", "name": "svc", "status": "active"})  # type: ignore[union-attr]
    assert receiver.take(1, timeout=5)[0].event["id"] == "e2"


def test_a_webhook_answering_ten_megabytes_is_read_only_up_to_the_cap(environ: dict[str, str]) -> None:
    """A receiver that answers 10 MB costs the worker at most the response cap, not 10 MB of memory."""
    import threading
    import tracemalloc
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from config import load_settings
    from workers.engine.runtime import build_runtime

    size = 10 * 1024 * 1024

    class Flood(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client hung up after the cap: what we want

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    environ.update(
        {
            "TOKENKEEPER_WEBHOOK_URL": f"http://127.0.0.1:{httpd.server_address[1]}/hook",
            "TOKENKEEPER_WEBHOOK_SECRET": SECRET,
            "TOKENKEEPER_MAX_RESPONSE_BYTES": "262144",
        }
    )
    webhook = build_runtime(load_settings(environ)).webhook
    assert webhook is not None
    try:
        tracemalloc.start()
        webhook.deliver({"id": "e1", "name": "svc", "status": "active"})  # a 200: delivered
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        httpd.shutdown()
        httpd.server_close()
    assert peak < 2 * 1024 * 1024, f"{peak} bytes held while reading the answer"
