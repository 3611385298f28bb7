"""GET /healthz says which part is missing."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_without_worker_or_beat_health_is_503_naming_them(client) -> None:
    """Redis alone is not healthy: the JSON names the missing worker and beat."""
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["redis"] == "ok"
    assert checks["worker"].startswith("down") and checks["beat"].startswith("down")


def test_with_worker_and_beat_health_is_200(client, start_processes, runtime) -> None:
    """Once a worker answers pings and beat's tick has run, /healthz is 200."""
    from tests.support.processes import wait_until

    start_processes("worker")
    start_processes("beat")
    wait_until(runtime.store.last_tick, 20, "the first scheduling tick")
    response = client.get("/healthz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "ok"


def test_with_redis_down_health_is_503(environ, make_client) -> None:
    """Redis unreachable: 503 and the JSON says so."""
    from config import load_settings
    from tests.support.ports import free_port

    settings = load_settings({**environ, "TOKENKEEPER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    response = make_client(settings).get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"].startswith("down")


def _timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, float]:
    """(status, seconds) of one GET on a fresh connection."""
    import time
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - started


def test_healthz_stays_fast_and_leaves_room_for_other_pages_under_twenty_callers(environ, web_factory) -> None:
    """With 20 clients calling /healthz in a loop, /healthz answers about as fast as a static file under the
    same load (it serves the latest probe, never waits on one), and /status is not held up.

    Compared with a request that does nothing, measured alternately in the same run, rather than with a
    fixed number of milliseconds: a probe that blocked requests would cost up to its 1 s ping timeout."""
    import base64
    import statistics
    import threading

    environ.update({"TOKENKEEPER_OPERATOR_USER": "ops", "TOKENKEEPER_OPERATOR_PASSWORD": "pw"})
    web = web_factory()
    stop = threading.Event()
    hammered = [0]
    answered_once = threading.Semaphore(0)

    def hammer() -> None:
        first = True
        while not stop.is_set():
            _timed_get(web.url + "/healthz")
            hammered[0] += 1
            if first:
                answered_once.release()
                first = False

    callers = [threading.Thread(target=hammer, daemon=True) for _ in range(20)]
    for caller in callers:
        caller.start()
    health, static = [], []
    try:
        # A gunicorn process's first /healthz waits for its first probe (up to the 1 s ping timeout, no worker
        # runs here). Twenty callers at once reach both processes: once each has had an answer, every
        # process has finished its first probe, and what is measured below is the steady state.
        for _ in callers:
            assert answered_once.acquire(timeout=30), "a caller never had an answer"
        for _ in range(50):
            health.append(_timed_get(web.url + "/healthz")[1])
            static.append(_timed_get(web.url + "/static/style.css")[1])
        auth = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
        status_page = _timed_get(web.url + "/status", auth)
        callback = _timed_get(web.url + "/oauth/callback?state=unknown&code=x")
    finally:
        stop.set()
        for caller in callers:
            caller.join(15)

    def p95(samples: list[float]) -> float:
        return statistics.quantiles(samples, n=20)[18]

    print(f"/healthz under 20 callers: p95 {p95(health) * 1000:.1f} ms, a static file {p95(static) * 1000:.1f} ms")
    assert p95(health) < 2 * p95(static) + 0.02, (p95(health), p95(static))
    assert max(health) < 0.5, max(health)  # never a probe's wait
    assert status_page[0] == 200 and status_page[1] < 1.0, status_page
    assert callback[0] < 500 and callback[1] < 1.0, callback
    assert hammered[0] > 100  # the callers really were calling


def test_oversized_requests_are_refused_with_4xx_not_500(environ, web_factory) -> None:
    """A huge request line, too many or too big headers, or a huge form body get 414/431/413, never a 500."""
    import base64
    import http.client
    from urllib.parse import urlsplit

    environ.update({"TOKENKEEPER_OPERATOR_USER": "ops", "TOKENKEEPER_OPERATOR_PASSWORD": "pw"})
    web = web_factory()
    where = urlsplit(web.url)

    def send(method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            return connection.getresponse().status
        except (ConnectionResetError, BrokenPipeError):
            return 413  # the server answered and closed before taking the whole body
        finally:
            connection.close()

    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
    assert send("GET", "/oauth/callback?state=" + "a" * 20_000, {}) == 414
    assert send("GET", "/healthz", {f"X-Filler-{n}": "x" for n in range(200)}) == 431
    assert send("GET", "/healthz", {"X-Big": "x" * 20_000}) in (400, 431)
    form = b"token=" + b"a" * 2_000_000
    assert (
        send("POST", "/status/refresh/svc", {**auth, "Content-Type": "application/x-www-form-urlencoded"}, form) == 413
    )
    assert "Traceback" not in web.output()


def test_workers_falling_behind_show_as_degraded_before_tokens_expire(client, start_processes, runtime) -> None:
    """Refreshes that could start a while ago and that no worker took: /healthz stays 200 but says "degraded" with
    the rates, /metrics counts them, while the tokens still have 10 minutes to live. One a worker holds (a slow
    provider) is not counted."""
    import time

    from workers.engine.scheduler import measure_capacity
    from workers.ops.metrics import exposition

    store, settings = runtime.store, runtime.settings
    now = time.time()
    for i in range(6):
        store.redis.hset(f"tokenkeeper:token:late{i}", "expires_at", repr(now + 600))
        store.schedule(f"late{i}", now - 60)
    store.schedule("later", now + 150)
    # Could start a little over the patience ago (not yet presumed lost), queued nowhere: as if every worker were
    # busy with other work since.
    could_start = now - settings.capacity_patience - 1
    assert could_start > now - settings.lost_after
    assert len(store.claim_due(could_start, 0.0, settings.lost_after, 1000)) == 6
    store.redis.set("tokenkeeper:lock:late5", "a-worker")  # under way at a slow provider
    start_processes("worker")
    store.mark_tick(now)
    capacity = measure_capacity(store, now=now, lost_after=settings.lost_after, patience=settings.capacity_patience)
    assert capacity.exceeded and capacity.waiting == 5
    assert abs(capacity.need - 1 / 300) < 1e-9  # one refresh due in the next five minutes

    response = client.get("/healthz")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "degraded"
    assert body["checks"]["capacity"].startswith("degraded: refresh capacity exceeded: need 0.0/s, doing unknown")
    assert "5 waiting" in body["checks"]["capacity"]
    assert "tokenkeeper_refreshes_waiting 5.0" in exposition(store).decode()


def test_workers_keeping_up_report_their_rates(runtime) -> None:
    """Nothing waiting: capacity ok, and "doing" is the finished count's rate between two samples."""
    from workers.engine.scheduler import measure_capacity

    store, settings = runtime.store, runtime.settings
    first = measure_capacity(store, now=1000.0, lost_after=settings.lost_after, patience=settings.capacity_patience)
    assert not first.exceeded and first.doing is None
    store.redis.hincrby("tokenkeeper:metrics:refresh_outcomes", "refreshed", 600)
    second = measure_capacity(store, now=1060.0, lost_after=settings.lost_after, patience=settings.capacity_patience)
    assert second.doing == 10.0
    assert second.describe() == "ok (need 0.0/s, doing 10.0/s)"


def test_the_tick_keeps_reporting_refreshes_no_worker_takes(runtime) -> None:
    """Ticks every 2 s over three lost_after periods, refreshes queued but never taken: from one patience after
    they could start, most ticks say capacity exceeded, though each is queued again as lost every lost_after."""
    from workers.engine.scheduler import dispatch_due, measure_capacity

    store, settings = runtime.store, runtime.settings
    t0 = 1000.0
    for i in range(3):
        store.redis.hset(f"tokenkeeper:integration:n{i}", "refresh_at", repr(t0))
        store.redis.hset(f"tokenkeeper:token:n{i}", "expires_at", repr(t0 + 3600))
        store.schedule(f"n{i}", t0)
    verdicts: list[tuple[float, bool]] = []
    now = t0
    while now <= t0 + 3 * settings.lost_after:
        capacity = measure_capacity(store, now=now, lost_after=settings.lost_after, patience=settings.capacity_patience)
        verdicts.append((now, capacity.exceeded))
        dispatch_due(store, lambda items, countdown: None, now=now, horizon=10.0, lost_after=settings.lost_after)
        now += 2.0
    assert not any(exceeded for at, exceeded in verdicts if at <= t0 + settings.capacity_patience)
    later = [exceeded for at, exceeded in verdicts if at > t0 + settings.capacity_patience + 2]
    assert sum(later) >= len(later) / 2, verdicts
