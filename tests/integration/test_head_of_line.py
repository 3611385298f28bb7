"""No head-of-line blocking: a hanging provider, a saturated pool or a broken integration delays no one else."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery._state import get_current_app

from tests.support.observe import FreshnessWatch
from tests.support.processes import wait_until
from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime
from workers.store import Status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# connect + read: the hanging provider holds each request this long before it is cut.
DEADLINE = {"TOKENKEEPER_HTTP_CONNECT_TIMEOUT": "1", "TOKENKEEPER_HTTP_READ_TIMEOUT": "3"}
HELD_SECONDS = 4.0
# A refresh queued behind the hanging one would be late by up to HELD_SECONDS; a third of it tells that apart
# from scheduling noise on a loaded two-core machine.
LATE_LIMIT = HELD_SECONDS / 3
WATCH_SECONDS = 20.0


@pytest.fixture
def hanging_server() -> Iterator[TokenServer]:
    """A token server that takes every request and never answers it (until the test ends)."""
    server = TokenServer().start()
    server.release.clear()
    yield server
    server.stop()


@pytest.fixture
def environ(environ: dict[str, str]) -> dict[str, str]:
    return {**environ, **DEADLINE}


def _create(runtime: Runtime, spec: dict[str, object]) -> None:
    # In-process creation: the hanging provider could never answer a first token request.
    Registry(runtime).create(spec)


def _hang(redis_client: redis.Redis, name: str, server: TokenServer) -> None:
    """Point a created integration at ``server`` (its next refresh hangs there)."""
    key = f"tokenkeeper:integration:{name}"
    spec = redis_client.hget(key, "spec")
    assert spec is not None
    text = spec if isinstance(spec, str) else spec.decode()
    redis_client.hset(key, "spec", text.replace(_url_of(text), server.url))


def _plan(runtime: Runtime, redis_client: redis.Redis, name: str, at: float) -> None:
    """Move ``name``'s planned refresh to ``at``."""
    runtime.store.schedule(name, at)
    redis_client.hset(f"tokenkeeper:integration:{name}", "refresh_at", repr(at))


def _url_of(spec_json: str) -> str:
    return str(json.loads(spec_json)["token_url"])


def test_a_hanging_provider_delays_no_other_integrations_refresh(
    token_server: TokenServer,
    hanging_server: TokenServer,
    runtime: Runtime,
    start_processes,
    redis_client: redis.Redis,
) -> None:
    """One provider hangs for its whole 4 s deadline on every request; 10 others on 5 s tokens are never refreshed
    as late as a wait behind it would make them (a third of it) and never read expired."""
    names = [f"fast{i}" for i in range(10)]
    # Running before the first plan comes due: a worker and beat still starting would make the first round late
    # for reasons that have nothing to do with the hanging provider.
    start_processes("worker", concurrency=2)
    start_processes("beat")
    wait_until(lambda: runtime.store.last_tick() is not None, 30, "beat's first tick")
    for name in [*names, "slow"]:
        _create(runtime, cc_spec(token_server, name))
    _hang(redis_client, "slow", hanging_server)

    watch = FreshnessWatch(redis_client, names)
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        watch.look()
        time.sleep(0.05)

    slow = runtime.store.load("slow")
    assert slow is not None and slow.status == Status.RETRYING  # it really hung, and was cut
    assert len(hanging_server.grants) >= 2
    late = watch.late()
    print(
        f"{len(late)} scheduled refreshes; worst {late[-1]:.3f}s late; {watch.expired} of {watch.reads} reads expired"
    )
    assert len(late) >= 40
    assert late[-1] <= LATE_LIMIT, f"refreshed up to {late[-1]:.3f}s late: {[x for x in late if x > LATE_LIMIT]}"
    assert watch.expired == 0


def test_a_saturated_refresh_pool_does_not_starve_the_scheduling_tick(
    token_server: TokenServer,
    hanging_server: TokenServer,
    runtime: Runtime,
    start_processes,
    redis_client: redis.Redis,
    environ: dict[str, str],
) -> None:
    """With every pool process stuck in hanging refreshes, the tick stays under 2 s old and a lost refresh is
    queued again and carried out."""
    hangers = [f"hang{i}" for i in range(24)]
    for name in [*hangers, "lost"]:
        _create(runtime, cc_spec(token_server, name))
    for name in hangers:
        _hang(redis_client, name, hanging_server)
    # "lost" is claimed by a scheduler whose message never reached the broker.
    now = time.time()
    _plan(runtime, redis_client, "lost", now)
    claimed = runtime.store.claim_due(time.time(), 0.0, runtime.settings.lost_after, 1000)
    assert [name for name, _, _ in claimed] == ["lost"]
    presumed_lost_at = redis_client.zscore("tokenkeeper:inflight", "lost")
    assert presumed_lost_at is not None
    lost_refreshed_at = redis_client.hget("tokenkeeper:integration:lost", "refreshed_at")
    # All due now: every refresh the single pool process takes hangs for its whole deadline.
    for name in hangers:
        _plan(runtime, redis_client, name, now)

    start_processes("worker", concurrency=1)
    start_processes("beat")
    wait_until(lambda: len(hanging_server.grants) >= 1, 20, "the first hanging refresh")

    ages = []
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        last = runtime.store.last_tick()
        ages.append(float("inf") if last is None else time.time() - last)
        time.sleep(0.1)
    print(f"tick age: worst {max(ages):.2f}s over {len(ages)} looks; {len(hanging_server.grants)} hanging requests")
    assert len(hanging_server.grants) >= 4  # the pool really was held by hanging refreshes
    assert max(ages) < 2.0
    # lost_after is 10 s in these tests: a tick took it back and queued it again (claimed anew)...
    requeued = redis_client.zscore("tokenkeeper:inflight", "lost")
    refreshed_at = redis_client.hget("tokenkeeper:integration:lost", "refreshed_at")
    assert refreshed_at != lost_refreshed_at or (requeued is not None and requeued > presumed_lost_at)
    # ...and a worker carries it out once the pool has a turn for it.
    wait_until(
        lambda: redis_client.hget("tokenkeeper:integration:lost", "refreshed_at") != lost_refreshed_at,
        30,
        "the lost refresh to be carried out",
        0.2,
    )


def test_a_corrupted_secret_fails_its_own_integration_and_the_batch_goes_on(
    token_server: TokenServer, runtime: Runtime, celery_client: Celery, redis_client: redis.Redis
) -> None:
    """Mid-batch, one integration's stored secrets no key opens and another's open to nonsense (an exception not
    ours): the others are refreshed; each broken one is retrying with a reason naming the error type, a history
    entry, and a later plan (backoff, not at once)."""
    from workers.tasks import refresh_batch

    names = ["a", "b", "broken", "c", "odd", "d"]
    for name in names:
        _create(runtime, cc_spec(token_server, name))
    redis_client.hset("tokenkeeper:integration:broken", "secrets", "gAAAAA-not-a-fernet-token")
    redis_client.hset("tokenkeeper:integration:odd", "secrets", runtime.box.seal(["client-secret"]))  # type: ignore[list-item]
    now = time.time()
    for name in names:
        _plan(runtime, redis_client, name, now)
    before = {name: redis_client.hget(f"tokenkeeper:integration:{name}", "refreshed_at") for name in names}

    # The task's body, in this process, on the test's app (as a worker would run the message).
    previous = get_current_app()
    celery_client.set_current()
    try:
        refresh_batch([[name, now] for name in names])
    finally:
        previous.set_current()

    for name in ("a", "b", "c", "d"):
        assert redis_client.hget(f"tokenkeeper:integration:{name}", "refreshed_at") != before[name], name
    for name, error in (("broken", "ConfigurationError"), ("odd", "Error")):
        broken = runtime.store.load(name)
        assert broken is not None
        assert broken.status == Status.RETRYING, name
        assert error in broken.reason and "retry 1 at" in broken.reason, broken.reason
        assert broken.refresh_at is not None and broken.refresh_at > time.time()
        assert Status.RETRYING in [entry["status"] for entry in runtime.store.history(name)]
        assert "client-secret" not in broken.reason and "gAAAAA" not in broken.reason
