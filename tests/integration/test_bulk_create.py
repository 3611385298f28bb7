"""A bulk creation does not starve the refreshes of integrations that already exist."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tests.support.observe import FreshnessWatch
from tests.support.processes import wait_until
from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer
from workers.engine.registry import Registry
from workers.producer import send

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BULK = 4000


@pytest.fixture
def hour_server() -> Iterator[TokenServer]:
    """The bulk's provider: hour-long tokens, so the bulk adds creations and no refreshes."""
    server = TokenServer(lifetime=3600.0).start()
    yield server
    server.stop()


def test_refreshes_go_out_on_time_while_thousands_of_creations_wait_in_the_queue(
    token_server: TokenServer,
    hour_server: TokenServer,
    runtime,
    start_processes,
    celery_client,
    redis_client: redis.Redis,
) -> None:
    """4,000 creations queued at once take the two worker processes many seconds; meanwhile 10 integrations on 5 s
    tokens are refreshed within 1 s of their plan and never read expired (their refreshes do not wait behind the
    creations in the queue)."""
    start_processes("worker", concurrency=2)
    start_processes("beat")
    wait_until(lambda: runtime.store.last_tick() is not None, 30, "beat's first tick")
    names = [f"live{i}" for i in range(10)]
    for name in names:
        Registry(runtime).create(cc_spec(token_server, name))
    bulk = [f"bulk{i}" for i in range(BULK)]
    results = [send(celery_client, "tokenkeeper.create_integration", cc_spec(hour_server, name)) for name in bulk]
    queued_at = time.monotonic()

    watch = FreshnessWatch(redis_client, names)
    while not results[-1].ready():
        watch.look()
        assert time.monotonic() - queued_at < 300, "the bulk creation did not finish"
        time.sleep(0.05)
    took = time.monotonic() - queued_at
    late = watch.late()
    print(
        f"{BULK} creations in {took:.1f}s; {len(late)} refreshes meanwhile, worst {late[-1]:.3f}s late; "
        f"{watch.expired} of {watch.reads} reads expired"
    )
    assert took > 5  # the creations really held the workers for over a token lifetime
    assert len(late) >= 10 * int(took / 5)  # every integration refreshed about once per lifetime...
    assert late[-1] <= 1.0, late[-5:]  # ...on time
    assert watch.expired == 0
    assert sum(1 for r in results if r.get(timeout=10)["status"] == "active") == BULK
