"""A batch of scheduled refreshes against a real Redis and token server: few round trips, nothing shared
between integrations but the connection."""

from __future__ import annotations

import json
import time

import redis

from tests.support.specs import cc_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime


def _scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{command}", {}).get("calls", 0)) for command in ("evalsha", "eval"))


def _due_now(runtime: Runtime, redis_client: redis.Redis, names: list[str]) -> list[tuple[str, float]]:
    now = time.time()
    for name in names:
        runtime.store.schedule(name, now)
        redis_client.hset(f"tokenkeeper:integration:{name}", "refresh_at", repr(now))
    return [(name, now) for name in names]


def test_a_batch_takes_its_locks_in_one_round_trip_and_writes_in_few(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Twenty refreshes: every lock and integration in one script call, the answers in a few (were 40 calls)."""
    names = [f"svc{i}" for i in range(20)]
    for name in names:
        Registry(runtime).create(cc_spec(token_server, name))
    items = _due_now(runtime, redis_client, names)
    before = _scripts_run(redis_client)
    results = Refresher(runtime).refresh_batch(items)
    calls = _scripts_run(redis_client) - before
    assert [result.outcome if result else None for result in results] == ["refreshed"] * 20
    assert token_server.count("client_credentials") == 40
    # One to take the locks, then one per group of answers (all twenty at once unless the machine is slow).
    assert 2 <= calls <= 6, calls


def test_a_cookie_set_for_one_integration_goes_out_with_no_other_request(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A provider (or whoever answers at its host) sets a cookie in one tenant's token answer: the next
    integration's request to the same host carries no cookie, so nothing one answer set follows another's."""
    for name in ("tenant_a", "tenant_b"):
        Registry(runtime).create(cc_spec(token_server, name))
    token_server.queue(
        Canned(
            body=json.dumps({"access_token": "for-a", "token_type": "Bearer", "expires_in": 600}).encode(),
            headers={"Content-Type": "application/json", "Set-Cookie": "session=tenant-a-secret; Path=/"},
        )
    )
    refresher = Refresher(runtime)
    assert refresher.refresh("tenant_a").outcome == "refreshed"
    assert refresher.refresh("tenant_b").outcome == "refreshed"
    assert refresher.refresh_batch(_due_now(runtime, redis_client, ["tenant_a", "tenant_b"]))[1] is not None
    assert token_server.cookie_headers[-3:] == [None, None, None]
