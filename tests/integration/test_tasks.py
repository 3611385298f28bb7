"""The contract's Celery tasks through a real broker and worker: shapes, errors, and no secret shown."""

from __future__ import annotations

import contextlib

import pytest
import redis
from celery import Celery, signals

from tests.support.observe import EventLog, all_redis_text
from tests.support.processes import wait_until
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import TokenServer
from workers.celery_app import _redact_published_arguments
from workers.producer import call

pytestmark = pytest.mark.e2e


def test_tasks_answer_with_the_contract_shapes(
    token_server: TokenServer, start_processes, celery_client: Celery
) -> None:
    """create, refresh, update and delete return the documented small dicts."""
    start_processes("worker")
    created = call(celery_client, "tokenkeeper.create_integration", cc_spec(token_server, "svc"), timeout=20)
    assert set(created) == {"name", "status", "expires_at"} and created["status"] == "active"
    refreshed = call(celery_client, "tokenkeeper.refresh_integration", "svc", timeout=20)
    assert refreshed["outcome"] == "refreshed" and refreshed["name"] == "svc"
    updated = call(celery_client, "tokenkeeper.update_integration", "svc", {"scopes": "a"}, timeout=20)
    assert updated["status"] == "active"
    assert call(celery_client, "tokenkeeper.delete_integration", "svc", timeout=20) == {"name": "svc", "deleted": True}


def test_a_failed_creation_returns_the_providers_error_and_stores_nothing(
    token_server: TokenServer, start_processes, celery_client: Celery, redis_client: redis.Redis
) -> None:
    """The producer gets invalid_client with the provider's description; no integration key exists."""
    start_processes("worker")
    with pytest.raises(Exception, match="invalid_client: client authentication failed") as caught:
        call(
            celery_client,
            "tokenkeeper.create_integration",
            cc_spec(token_server, "svc", client_secret="wrong"),
            timeout=20,
        )
    assert "wrong" not in str(caught.value)
    assert redis_client.keys("tokenkeeper:*") in ([], ["tokenkeeper:given_key"])  # the service's digest key may stay
    with pytest.raises(Exception, match="token_url"):
        call(
            celery_client,
            "tokenkeeper.create_integration",
            {**cc_spec(token_server, "svc"), "token_url": "ftp://x"},
            timeout=20,
        )
    call(celery_client, "tokenkeeper.create_integration", cc_spec(token_server, "svc"), timeout=20)
    with pytest.raises(Exception, match="already exists"):
        call(celery_client, "tokenkeeper.create_integration", cc_spec(token_server, "svc"), timeout=20)


def test_no_secret_reaches_events_results_logs_or_redis(
    token_server: TokenServer, start_processes, celery_client: Celery, redis_url: str, process_env: dict[str, str]
) -> None:
    """A foreign producer sends a spec with secrets; Flower's events, results, logs and Redis never show them."""
    # Plain secrets, which the operator accepted: even then nothing past the message shows them.
    process_env["TOKENKEEPER_ACCEPT_PLAIN_SECRETS"] = "true"
    token_server.clients["client-id"] = "CS-planted-7f3a"
    worker = start_processes("worker")
    spec = rt_spec(token_server, "user", client_secret="CS-planted-7f3a")
    first_refresh_token = spec["refresh_token"]
    # A foreign producer: plain send_task without our publish hook, so its argsrepr header holds the spec.
    signals.before_task_publish.disconnect(_redact_published_arguments)
    with EventLog(celery_client) as log, contextlib.ExitStack() as stack:
        stack.callback(signals.before_task_publish.connect, _redact_published_arguments)
        celery_client.send_task("tokenkeeper.create_integration", args=[spec]).get(timeout=20)
        celery_client.send_task("tokenkeeper.refresh_integration", args=["user"]).get(timeout=20)
        bad = {**spec, "name": "bad", "client_secret": "CS-wrong-9e1c"}
        with pytest.raises(Exception, match="invalid_client"):
            celery_client.send_task("tokenkeeper.create_integration", args=[bad]).get(timeout=20)
        wait_until(lambda: sum(e["type"] == "task-failed" for e in log.events) >= 1, 10, "failure event")
    received = [e for e in log.events if e["type"] == "task-received"]
    assert len(received) == 3 and "user" in received[0]["args"]
    live = list(token_server.live_refresh)
    issued = list(token_server.access)
    planted = ["CS-planted-7f3a", "CS-wrong-9e1c", first_refresh_token, *live, *issued]
    event_text = repr(log.events)
    stored = all_redis_text(redis_url)
    worker_log = worker.output()
    for secret in planted:
        assert secret not in event_text, [e for e in log.events if secret in repr(e)]
        assert secret not in worker_log, "secret in worker log"
    for secret in ["CS-planted-7f3a", "CS-wrong-9e1c", first_refresh_token, *live]:
        assert secret not in stored, "secret stored in plain text"
    # The consumer hash is the one place an access token may be in Redis.
    assert stored.count(issued[-1]) == 1
