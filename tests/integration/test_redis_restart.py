"""Redis restarted under load, AOF on: everything survives and every part recovers by itself."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.ports import free_port
from tests.support.processes import wait_until
from tests.support.specs import rt_spec
from tests.support.token_server import TokenServer
from tests.support.web import Gunicorn
from workers.ops.redis_server import RedisUsers, start_server, wait_ready
from workers.producer import send

pytestmark = pytest.mark.e2e

COUNT = 20


class AofRedis:
    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.data = data
        self.users = RedisUsers.generate()
        self.url = self.users.service_url(self.port)
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        process = start_server(self.port, self.data, persistent=True, users=self.users)
        wait_ready(self.url, process)
        return process

    def restart(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self.process = self._start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


@pytest.fixture
def aof_redis(environ: dict[str, str], tmp_path: Path) -> Iterator[AofRedis]:
    server = AofRedis(tmp_path / "aof")
    environ["TOKENKEEPER_REDIS_URL"] = server.url
    yield server
    server.stop()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow
def test_a_redis_restart_under_load_loses_nothing(
    aof_redis: AofRedis,
    token_server: TokenServer,
    start_processes,
    celery_client,
    process_env,
    log_dir,
) -> None:
    """20 rotating integrations on 5 s tokens; Redis restarts; all stay active, no refresh token is lost."""
    start_processes("worker")
    start_processes("beat")
    web = Gunicorn(process_env, log_dir)
    try:
        results = [
            send(celery_client, "tokenkeeper.create_integration", rt_spec(token_server, f"i{i}")) for i in range(COUNT)
        ]
        assert all(result.get(timeout=30)["status"] == "active" for result in results)
        wait_until(lambda: healthy(web.url), 30, "the callback app to report healthy", 0.2)
        wait_until(lambda: token_server.count("refresh_token") >= 3 * COUNT, 30, "refreshes under way", 0.1)

        before = token_server.count("refresh_token")
        aof_redis.restart()
        restarted = time.time()

        client = redis.Redis.from_url(aof_redis.url, decode_responses=True)
        assert len(client.smembers("tokenkeeper:names")) == COUNT
        wait_until(
            lambda: all(
                float(client.hget(f"tokenkeeper:token:i{i}", "updated_at") or 0) > restarted for i in range(COUNT)
            ),
            30,
            "every integration refreshed after the restart",
            0.2,
        )
        wait_until(lambda: healthy(web.url), 30, "healthz after the restart", 0.2)
        statuses = {client.hget(f"tokenkeeper:token:i{i}", "status") for i in range(COUNT)}
        assert statuses == {"active"}
        assert token_server.reused == []
        # Refreshing carries on past the first round after the restart (awaited: that round can be the only
        # one by the time every integration has been refreshed, when a batch carries all of them at once).
        wait_until(lambda: token_server.count("refresh_token") > before + COUNT, 30, "refreshing to carry on", 0.2)
    finally:
        web.stop()
