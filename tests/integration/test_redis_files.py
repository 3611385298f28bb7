"""What Redis writes to disk is private: a 0700 folder of 0600 files, and rotated-out ciphertext leaves it."""

from __future__ import annotations

import stat
from pathlib import Path

import redis

from workers.engine.keyrotation import wait_idle


def modes(folder: Path) -> dict[str, int]:
    """Permission bits of ``folder`` and everything under it, by path relative to it."""
    return {str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode) for path in [folder, *folder.rglob("*")]}


def test_the_aof_and_snapshot_are_readable_by_the_redis_user_only(
    redis_client: redis.Redis, redis_data_dir: Path
) -> None:
    """After a write, BGREWRITEAOF and BGSAVE, the data folder is 0700 and every file in it (AOF, RDB, log) 0600."""
    redis_client.set("tokenkeeper:probe", "on disk")
    wait_idle(redis_client)
    redis_client.bgrewriteaof()
    wait_idle(redis_client)
    redis_client.bgsave()
    wait_idle(redis_client)
    found = modes(redis_data_dir)
    assert any(name.endswith(".aof") for name in found) and "dump.rdb" in found, found
    for name, mode in found.items():
        expected = 0o700 if (redis_data_dir / name).is_dir() else 0o600
        assert mode == expected, f"{name} is {oct(mode)}"
