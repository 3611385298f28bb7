"""Every path that stores a new refresh token writes like a refresh does: guarded, patient, durable, and honest
about what happened when Redis's reply is lost; a deletion fences a refresh in flight."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from config import load_settings
from tests.support.ports import free_port
from tests.support.processes import wait_until
from tests.support.proxy import DroppingProxy
from tests.support.specs import rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime, build_runtime
from workers.ops.redis_server import SERVICE_USER, RedisUsers, start_server, wait_ready

# Only the guarded write's request carries this (workers/store/lua/write.lua's named values).
WRITE_MARKER = b'"history_length"'


@pytest.fixture
def proxy(redis_url: str) -> Iterator[DroppingProxy]:
    proxy = DroppingProxy(urlsplit(redis_url).port or 6379)
    yield proxy
    proxy.close()


def _through(runtime: Runtime, redis_url: str, proxy: DroppingProxy) -> Runtime:
    parts = urlsplit(redis_url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
    return build_runtime(runtime.settings, client=redis.Redis.from_url(urlunsplit(parts._replace(netloc=netloc))))


def test_a_refresh_whose_write_reply_is_lost_reports_what_happened(
    runtime: Runtime, token_server: TokenServer, redis_url: str, proxy: DroppingProxy
) -> None:
    """Redis runs the write but the reply is lost with the connection: the retry finds its own write applied and
    the refresh says `refreshed` (not `superseded`), keeping the rotated token."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    proxied = _through(runtime, redis_url, proxy)
    assert Refresher(proxied).refresh("user").outcome == "refreshed"  # the scripts are loaded now
    proxy.arm(WRITE_MARKER)
    result = Refresher(proxied).refresh("user")
    assert proxy.dropped.is_set()
    assert result.outcome == "refreshed", result
    live = next(iter(token_server.live_refresh))
    assert runtime.box.open(runtime.store.load("user").sealed_secrets)["refresh_token"] == live
    assert Refresher(runtime).refresh("user").outcome == "refreshed"
    assert token_server.reused == []


def test_an_update_whose_write_reply_is_lost_keeps_the_rotated_token(
    runtime: Runtime, token_server: TokenServer, redis_url: str, proxy: DroppingProxy
) -> None:
    """An update of a refresh-token integration spends the stored refresh token; when Redis's reply to its write is
    lost the update still succeeds, the rotated token is stored, and nothing reuses the spent one."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    proxied = _through(runtime, redis_url, proxy)
    Refresher(proxied).refresh("user")  # the scripts are loaded now
    proxy.arm(WRITE_MARKER)
    answer = Registry(proxied).update("user", {"scopes": ["read"]})
    assert proxy.dropped.is_set()
    assert answer["status"] == "active", answer
    live = next(iter(token_server.live_refresh))
    assert runtime.box.open(runtime.store.load("user").sealed_secrets)["refresh_token"] == live
    assert Refresher(runtime).refresh("user").outcome == "refreshed"
    assert token_server.reused == []


def test_a_delete_during_a_held_refresh_leaves_no_live_token(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A refresh held at the token server (already rotated) while the integration is deleted: afterwards nothing
    is left in Redis and no refresh token is live at the provider (the late one was revoked or never issued)."""
    spec = rt_spec(token_server, "user", revocation_url=token_server.revocation_url)
    Registry(runtime).create(spec)
    hold = threading.Event()
    held = Canned(process_first=True, hold=hold)
    token_server.queue(held)
    refresh = threading.Thread(target=lambda: Refresher(runtime).refresh("user"))
    refresh.start()
    assert held.arrived.wait(10)
    deletion = threading.Thread(target=lambda: Registry(runtime).delete("user"))
    deletion.start()
    # The refresh's answer comes once the deletion has fenced the integration (or, unfenced, revoked).
    wait_until(
        lambda: bool(token_server.revoked) or redis_client.hget("tokenkeeper:integration:user", "deleting"),
        20,
        "the deletion to begin",
    )
    hold.set()
    refresh.join(30)
    deletion.join(30)
    assert redis_client.keys("*user*") == []
    assert token_server.live_refresh == {}, "a refresh token minted during the deletion is still live"


def test_a_rotation_waits_for_a_replica_when_asked(
    environ: dict[str, str], token_server: TokenServer, tmp_path: Path
) -> None:
    """With TOKENKEEPER_WAIT_REPLICAS=1 a refresh that rotated the refresh token returns only once the replica
    acknowledged it (WAIT), so the replica a failover would promote already holds the rotated token."""
    users = RedisUsers.generate()
    ports = (free_port(), free_port())
    servers = [start_server(port, tmp_path / str(port), persistent=True, users=users) for port in ports]
    try:
        for port, process in zip(ports, servers, strict=True):
            wait_ready(users.service_url(port), process)
        master = redis.Redis.from_url(users.service_url(ports[0]))
        replica = redis.Redis.from_url(users.service_url(ports[1]), decode_responses=True)
        master.config_set("repl-diskless-sync-delay", 0)
        replica.config_set("masteruser", SERVICE_USER)
        replica.config_set("masterauth", users.service_password)
        replica.replicaof("127.0.0.1", ports[0])
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 30, "the replica", 0.1)
        settings = load_settings(
            {**environ, "TOKENKEEPER_REDIS_URL": users.service_url(ports[0]), "TOKENKEEPER_WAIT_REPLICAS": "1"}
        )
        runtime = build_runtime(dataclasses.replace(settings, accept_plain_secrets=True))
        Registry(runtime).create(rt_spec(token_server, "user"))
        master.config_resetstat()
        assert Refresher(runtime).refresh("user").outcome == "refreshed"
        assert "cmdstat_wait" in master.info("commandstats"), "the rotation did not wait for a replica"
        stored = runtime.store.load("user")
        assert stored is not None
        assert replica.hget("tokenkeeper:integration:user", "secrets") == stored.sealed_secrets
    finally:
        for process in servers:
            process.terminate()
            process.wait(10)
