"""Webhook notifications: every status change, recovery included, signed, delivered by a real worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import rt_spec
from tests.support.processes import CeleryProcess
from tests.support.token_server import Canned, TokenServer
from tests.support.webhook_receiver import WebhookReceiver
from workers.notifications import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from workers.refresher import Refresher
from workers.registry import Registry
from workers.runtime import Runtime

SECRET = "webhook-test-secret"


@pytest.fixture
def webhook_env(environ: dict[str, str], receiver: WebhookReceiver) -> None:
    # Before settings, runtime and the worker processes are built from environ.
    environ["TOKENKEEPER_WEBHOOK_URL"] = receiver.url
    environ["TOKENKEEPER_WEBHOOK_SECRET"] = SECRET


def test_each_status_change_reaches_the_webhook_signed(
    webhook_env: None, runtime: Runtime, token_server: TokenServer, receiver: WebhookReceiver,
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
    assert refresher.refresh("crm").outcome == "refreshed"
    token_server.queue(Canned(status=400, body=b'{"error": "invalid_grant"}',
                              headers={"Content-Type": "application/json"}))
    assert refresher.refresh("crm").outcome == "needs_reauth"
    registry.update("crm", {"refresh_token": token_server.new_refresh_token()})

    deliveries = sorted(receiver.take(5, timeout=60), key=lambda d: d.event["at"])
    transitions = [(d.event["old_status"], d.event["new_status"]) for d in deliveries]
    assert transitions == [
        (None, "active"), ("active", "retrying"), ("retrying", "active"),
        ("active", "needs_reauth"), ("needs_reauth", "active"),
    ]
    assert {d.event["name"] for d in deliveries} == {"crm"}
    assert "invalid_grant" in deliveries[3].event["reason"]
    for delivery in deliveries:
        headers = delivery.headers
        assert verify(SECRET, headers[TIMESTAMP_HEADER], delivery.body, headers[SIGNATURE_HEADER], time.time())
        assert not verify("other-secret", headers[TIMESTAMP_HEADER], delivery.body, headers[SIGNATURE_HEADER],
                          time.time())
        assert headers[EVENT_ID_HEADER] == delivery.event["id"]
    assert len({d.event["id"] for d in deliveries}) == 5
    assert len(receiver.refused) == 1 and receiver.refused[0].event in [d.event for d in deliveries]
    # Nothing is left waiting and nothing more arrives.
    assert runtime.store.redis.llen(runtime.store.outbox_key) == 0


def test_no_webhook_no_outbox(runtime: Runtime, token_server: TokenServer) -> None:
    """Without a webhook URL, status changes are not queued anywhere (nothing grows unread)."""
    Registry(runtime).create(rt_spec(token_server, "crm"))
    token_server.queue(Canned(status=503, body=b"busy"))
    Refresher(runtime).refresh("crm")
    assert runtime.store.redis.exists(runtime.store.outbox_key) == 0


def test_event_ids_stay_unique_when_a_name_is_used_again(
    webhook_env: None, runtime: Runtime, token_server: TokenServer,
) -> None:
    """Delete and create again under the same name: the two creation events have different ids."""
    registry = Registry(runtime)
    registry.create(rt_spec(token_server, "crm"))
    registry.delete("crm")
    registry.create(rt_spec(token_server, "crm"))
    events = runtime.store.take_events(10)
    assert [event["new_status"] for event in events] == ["active", "active"]
    assert events[0]["id"] != events[1]["id"] and all(event["id"].startswith("crm:") for event in events)
