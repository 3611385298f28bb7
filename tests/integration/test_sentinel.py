"""Redis Sentinel: workers, beat and readers follow the master through a failover; tokens stay fresh."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config import load_settings
from tests.support.ports import free_port
from tests.support.processes import start_beat, start_worker, wait_until
from tests.support.sentinel import MASTER_NAME, SentinelSet
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import TokenServer
from workers.celery_app import create_celery
from workers.consumer import TokenReader
from workers.engine.runtime import redis_client
from workers.producer import call

pytestmark = pytest.mark.e2e


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    cluster = SentinelSet((free_port(), free_port(), free_port()), tmp_path / "sentinel")
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_tokens_stay_fresh_through_a_failover(
    sentinels: SentinelSet,
    environ: dict[str, str],
    tmp_path: Path,
) -> None:
    """Create through the broker on Sentinel, fail the master over to the replica, and refreshes
    carry on against the new master: the token read afterwards is newer and valid, no refresh
    token was used twice."""
    environ = {**environ, "TOKENKEEPER_REDIS_URL": sentinels.url, "TOKENKEEPER_REDIS_SENTINEL_MASTER": MASTER_NAME}
    settings = load_settings(environ)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEPER_")}, **environ}
    logs = tmp_path / "logs"
    logs.mkdir()
    server = TokenServer(lifetime=4).start()
    app = create_celery(settings)
    worker = start_worker(env, logs, "w0")
    beat = start_beat(env, logs)
    try:
        created = call(app, "tokenkeeper.create_integration", rt_spec(server, "crm"), timeout=30)
        assert created["status"] == "active"
        call(app, "tokenkeeper.create_integration", cc_spec(server, "billing"), timeout=30)
        reader = TokenReader(redis_client(settings.redis_url, MASTER_NAME))
        first = reader.read("crm")
        wait_until(lambda: reader.read("crm").access_token != first.access_token, 20, "a refresh before failover")

        sentinels.failover()
        assert sentinels.master_port_now() == sentinels.replica_port
        before = reader.read("crm").access_token
        wait_until(lambda: reader.read("crm").access_token != before, 30, "a refresh after the failover", 0.2)
        # Written to the new master, valid, and the rotation never presented a refresh token twice.
        on_new_master = redis.Redis.from_url(sentinels.url_of(sentinels.replica_port), decode_responses=True)
        token = on_new_master.hgetall("tokenkeeper:token:crm")
        assert token["status"] == "active" and server.is_valid(token["access_token"])
        assert float(token["expires_at"]) > time.time()
        assert server.reused == []
        # Producers reach the workers through the Sentinel-managed broker too.
        assert call(app, "tokenkeeper.refresh_integration", "billing", timeout=30)["outcome"] == "refreshed"
    finally:
        beat.stop()
        worker.stop()
        app.close()
        server.stop()
