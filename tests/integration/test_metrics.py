"""The metrics the alert rules need, against the test Redis, real token servers, a real webhook receiver and
real worker and beat processes: webhook deliveries by outcome, the last refresh that worked, the shortest
token lifetime, the latest health answer and the refresh lead."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest

from config import load_settings
from tests.support.monitoring import samples
from tests.support.processes import CeleryProcess, wait_until
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from tests.support.webhook_receiver import WebhookReceiver
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime
from workers.errors import WebhookError
from workers.ops.metrics import exposition
from workers.ops.notifications import send
from workers.store import Write

pytestmark = pytest.mark.e2e

OPERATOR = ("ops", "metrics-operator-password")


def scraped(runtime: Runtime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(exposition(runtime.store).decode())


def shortest_lifetime(runtime: Runtime) -> float | None:
    return scraped(runtime).get(("tokenkeeper_shortest_lifetime_seconds", ()))


def last_refresh(runtime: Runtime) -> float | None:
    return scraped(runtime).get(("tokenkeeper_last_refresh_timestamp_seconds", ()))


def deliveries(runtime: Runtime) -> dict[str, float]:
    return {
        labels[0][1]: value
        for (name, labels), value in scraped(runtime).items()
        if name == "tokenkeeper_webhook_deliveries_total"
    }


@pytest.fixture
def webhook_env(environ: dict[str, str], receiver: WebhookReceiver) -> None:
    # Before settings, runtime and any process are built from environ.
    environ["TOKENKEEPER_WEBHOOK_URL"] = receiver.url
    environ["TOKENKEEPER_WEBHOOK_SECRET"] = "metrics-webhook-secret"


def test_webhook_deliveries_are_counted_by_outcome(
    webhook_env: None, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """Real POSTs to a receiver on 127.0.0.1: 204 counts delivered; a 503 counts retrying, or failed on the last
    try; a 400 counts failed at once. All three outcomes are shown from the start, at 0."""
    assert deliveries(runtime) == {"delivered": 0, "retrying": 0, "failed": 0}
    webhook = runtime.webhook
    assert webhook is not None
    event = {"id": "svc:1:1", "name": "svc", "new_status": "active", "old_status": None}
    send(webhook, runtime.store, event, last_try=False)
    assert receiver.take(1, timeout=5)[0].event["id"] == "svc:1:1"
    for status, last_try, retryable in ((503, False, True), (503, True, True), (400, False, False)):
        receiver.fail_next, receiver.fail_status = 1, status
        with pytest.raises(WebhookError) as caught:
            send(webhook, runtime.store, event, last_try=last_try)
        assert caught.value.retryable is retryable
    assert len(receiver.refused) == 3
    assert deliveries(runtime) == {"delivered": 1, "retrying": 1, "failed": 2}


def test_a_worker_counts_its_deliveries_and_retries(
    webhook_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    receiver: WebhookReceiver,
    start_processes: Callable[..., CeleryProcess],
) -> None:
    """Through a real worker and beat: a creation's event refused once with 503 and then delivered counts one
    retrying and one delivered."""
    start_processes("worker")
    start_processes("beat")
    receiver.fail_next = 1
    Registry(runtime).create(cc_spec(token_server, "billing_api"))
    assert receiver.take(1, timeout=30)[0].event["name"] == "billing_api"
    wait_until(lambda: deliveries(runtime)["delivered"] == 1, 10, "the delivery to be counted")
    assert deliveries(runtime) == {"delivered": 1, "retrying": 1, "failed": 0}


def test_the_last_refresh_moves_forward_with_each_new_token_only(runtime: Runtime, token_server: TokenServer) -> None:
    """Creating is not refreshing; a refresh that stored a token sets the time, a failed one leaves it, and a
    write carrying an older time (a batch stored after a later one) never moves it back."""
    store = runtime.store
    Registry(runtime).create(cc_spec(token_server, "svc"))
    assert last_refresh(runtime) is None
    before = runtime.clock()
    assert Refresher(runtime).refresh("svc").outcome == "refreshed"
    refreshed = last_refresh(runtime)
    assert refreshed is not None and before <= refreshed <= runtime.clock()
    token_server.queue(Canned(status=503, body=b"busy"))
    assert Refresher(runtime).refresh("svc").outcome == "retrying"
    assert last_refresh(runtime) == refreshed

    key = store.keys.metrics("last_refresh")
    for at in (refreshed - 100, refreshed + 5):
        lock = store.acquire("svc", 10)
        record = store.load("svc")
        assert lock is not None and record is not None
        change = Write(
            lock, record.version, {"reason": "x"}, {}, {}, "keep", release=True, latest=((key, "refreshed", at),)
        )
        assert store.write_many([change])[0] > 0
    assert last_refresh(runtime) == refreshed + 5


def test_the_shortest_lifetime_follows_the_integrations_being_refreshed(
    runtime: Runtime, token_server: TokenServer
) -> None:
    """The smallest lifetime among current tokens of active or retrying integrations: one that stops
    (needs_reauth) leaves it and comes back with a new token, a retrying one stays, a deleted one leaves it, one
    waiting for consent never counts, and with none left the metric is gone."""
    registry, refresher = Registry(runtime), Refresher(runtime)
    assert shortest_lifetime(runtime) is None
    token_server.lifetime = 600
    registry.create(cc_spec(token_server, "long"))
    # Lifetimes are stored as expiry minus write time, whole seconds: one second may go to rounding.
    assert shortest_lifetime(runtime) in (599, 600)
    token_server.lifetime = 300
    registry.create(rt_spec(token_server, "short"))
    assert shortest_lifetime(runtime) in (299, 300)

    token_server.queue(
        Canned(status=400, body=b'{"error": "invalid_grant"}', headers={"Content-Type": "application/json"})
    )
    assert refresher.refresh("short").outcome == "needs_reauth"
    assert shortest_lifetime(runtime) in (599, 600)
    token_server.lifetime = 120
    registry.update("short", {"refresh_token": token_server.new_refresh_token()})
    assert shortest_lifetime(runtime) in (119, 120)
    token_server.queue(Canned(status=503, body=b"busy"))
    assert refresher.refresh("short").outcome == "retrying"
    assert shortest_lifetime(runtime) in (119, 120)

    registry.delete("short")
    assert shortest_lifetime(runtime) in (599, 600)
    registry.create(
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "a",
            "client_secret": "b",
            "token_url": token_server.url,
            "auth_url": "https://idp.example/auth",
        }
    )
    assert shortest_lifetime(runtime) in (599, 600)
    registry.delete("long")
    assert shortest_lifetime(runtime) is None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_metrics_show_the_latest_health_answer_and_the_refresh_lead(
    environ: dict[str, str], make_client, start_processes: Callable[..., CeleryProcess], runtime: Runtime
) -> None:
    """/metrics carries tokenkeeper_health per check as /healthz answers it (1 ok, 0 not) and the refresh lead:
    redis alone, then with a worker and beat."""
    settings = load_settings(
        {**environ, "TOKENKEEPER_OPERATOR_USER": OPERATOR[0], "TOKENKEEPER_OPERATOR_PASSWORD": OPERATOR[1]}
    )
    client = make_client(settings)
    auth = {"Authorization": _basic(*OPERATOR)}

    def health() -> dict[str, float]:
        text = client.get("/metrics", headers=auth).get_data(as_text=True)
        return {labels[0][1]: value for (name, labels), value in samples(text).items() if name == "tokenkeeper_health"}

    assert health() == {"redis": 1, "worker": 0, "beat": 0}
    text = client.get("/metrics", headers=auth).get_data(as_text=True)
    assert samples(text)[("tokenkeeper_refresh_lead_seconds", ())] == settings.refresh_lead

    start_processes("worker")
    start_processes("beat")
    wait_until(runtime.store.last_tick, 20, "the first scheduling tick")
    answer = wait_until(
        lambda: (response := client.get("/healthz")).status_code == 200 and response.get_json(), 20, "/healthz ok"
    )
    assert isinstance(answer, dict)
    checks = health()
    assert checks["redis"] == checks["worker"] == checks["beat"] == 1
    assert set(checks) == set(answer["checks"])
    started = time.monotonic()
    health()
    assert time.monotonic() - started < 0.5  # a fresh answer is served: the scrape pings nothing itself
