"""Scheduling faults with real beat processes: two beats by mistake, and a beat that was down an hour."""

from __future__ import annotations

import itertools
import time

import pytest
import redis

from tests.support.processes import wait_until
from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer
from workers.producer import send

pytestmark = pytest.mark.e2e


def create_many(celery_client, server: TokenServer, count: int) -> list[str]:
    names = [f"c{i}" for i in range(count)]
    for name in names:
        server.clients[name] = "secret-" + name
    results = [
        send(
            celery_client,
            "tokenkeeper.create_integration",
            cc_spec(server, name, client_id=name, client_secret="secret-" + name),
        )
        for name in names
    ]
    assert all(result.get(timeout=30)["status"] == "active" for result in results)
    return names


def test_two_beats_refresh_each_integration_once_per_due_time(
    token_server: TokenServer, start_processes, celery_client
) -> None:
    """With two beats ticking, no integration is refreshed twice for one plan (never sooner than half-life)."""
    token_server.lifetime = 4.0
    start_processes("worker")
    names = create_many(celery_client, token_server, 10)
    start_processes("beat")
    start_processes("beat")
    wait_until(lambda: all(len(token_server.grants_by_client[n]) >= 5 for n in names), 30, "four refreshes each")
    for name in names:
        times = token_server.grants_by_client[name]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= token_server.lifetime / 2 - 0.1, (name, gaps)


@pytest.fixture
def capped(environ: dict[str, str]) -> None:
    environ["TOKENKEEPER_MAX_REFRESH_RATE"] = "20"


def test_a_backlog_after_an_hour_without_beat_is_worked_off_at_the_rate_cap(
    capped, token_server: TokenServer, start_processes, celery_client, redis_client: redis.Redis
) -> None:
    """60 integrations an hour overdue, cap 20/s: each refreshed once, spread over three seconds, not a burst."""
    token_server.lifetime = 3600.0
    start_processes("worker", concurrency=4)
    names = create_many(celery_client, token_server, 60)
    overdue = time.time() - 3600
    for name in names:  # as if beat had been down for an hour
        redis_client.zadd("tokenkeeper:schedule", {name: overdue})
        redis_client.hset(f"tokenkeeper:integration:{name}", "refresh_at", repr(overdue))
    started = time.time()
    start_processes("beat")
    wait_until(lambda: all(len(token_server.grants_by_client[n]) >= 2 for n in names), 30, "every backlog refresh")
    refreshes = sorted(t for n in names for t in token_server.grants_by_client[n] if t >= started)
    assert len(refreshes) == 60
    busiest = max(sum(1 for t in refreshes if start <= t < start + 1.0) for start in refreshes)
    # Refreshes leave in quarter-second batches, so a one-second window can catch a batch early or late.
    assert busiest <= 30, busiest
    assert refreshes[-1] - refreshes[0] >= 2.5  # 60 at 20/s take about three seconds, not one burst
