"""A batch of scheduled refreshes against a real Redis and token server: few round trips, nothing shared
between integrations but the connection."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import redis

from config import Settings
from tests.support.specs import cc_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.overlap import BATCH_CONCURRENCY
from workers.engine.refresher import Refresher, RefreshResult
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime, build_runtime


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


def test_a_request_that_would_go_out_after_its_lock_ran_out_is_not_sent(
    settings: Settings, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A batch's last refresh waits behind held answers (one per thread the batch starts with); meanwhile its
    lock passes to another owner (it ran out, and another worker took it). It is not sent: that would spend the
    refresh token a second time."""
    # Requests go out late enough that each must first extend its lock (lock 2.5 s, request budget 1 s).
    runtime = build_runtime(
        dataclasses.replace(
            settings, accept_plain_secrets=True, lock_ttl=2.5, http_connect_timeout=0.5, http_read_timeout=0.5
        )
    )
    names = [f"ahead{i}" for i in range(BATCH_CONCURRENCY)] + ["last"]
    for name in names:
        Registry(runtime).create(cc_spec(token_server, name))
    hold = threading.Event()
    held = [Canned(process_first=True, hold=hold) for _ in range(BATCH_CONCURRENCY)]
    token_server.queue(*held)
    sent_before = len(token_server.bodies)
    results: list[RefreshResult | None] = []
    items = _due_now(runtime, redis_client, names)
    batch = threading.Thread(target=lambda: results.extend(Refresher(runtime).refresh_batch(items)))
    batch.start()
    assert all(canned.arrived.wait(10) for canned in held)
    redis_client.set("tokenkeeper:lock:last", "another-worker", px=60_000)
    hold.set()
    batch.join(30)
    last = results[-1]
    assert last is not None and last.outcome == "busy" and "ran out" in last.detail
    assert len(token_server.bodies) - sent_before == BATCH_CONCURRENCY  # the held ones only
    assert redis_client.get("tokenkeeper:lock:last") == "another-worker"


def test_a_corrupted_journal_entry_fails_only_its_own_refresh(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Mid-batch, one integration's attempt journal is not JSON: the step that takes every lock goes on past it,
    so the ones before and after it are refreshed (not found busy under locks a failed step left), and its own
    lock is not kept."""
    names = ["before", "broken", "after"]
    for name in names:
        Registry(runtime).create(cc_spec(token_server, name))
    items = _due_now(runtime, redis_client, names)
    redis_client.hset("tokenkeeper:integration:broken", "attempt", "{not json")
    results = Refresher(runtime).refresh_batch(items)
    assert [result.outcome if result else None for result in results] == ["refreshed", None, "refreshed"]
    assert not redis_client.exists("tokenkeeper:lock:broken")


def test_one_unwritable_change_leaves_the_rest_of_a_batch_written(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Three guarded writes in one script call, the middle one's consumer hash replaced by a string (Redis
    refuses the write part-way): it comes back WRITE_FAILED and the other two are stored, their metrics counted."""
    from workers.store import WRITE_FAILED, Write

    names = ["a", "b", "c"]
    for name in names:
        Registry(runtime).create(cc_spec(token_server, name))
    loaded = runtime.store.acquire_and_load_many(names, 30, time.time())
    redis_client.delete("tokenkeeper:token:b")
    redis_client.set("tokenkeeper:token:b", "not a hash")
    writes = []
    for taken in loaded:
        assert not isinstance(taken, Exception)
        lock, record = taken
        assert lock is not None and record is not None
        counters = (("tokenkeeper:metrics:test", "written", 1.0),)
        writes.append(Write(lock, record.version, {"reason": "x"}, {"updated_at": "1"}, {}, "keep", True, counters))
    versions = runtime.store.write_many(writes)
    assert versions[1] == WRITE_FAILED and versions[0] > 0 and versions[2] > 0
    assert redis_client.hget("tokenkeeper:metrics:test", "written") == "2"
