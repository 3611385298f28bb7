"""Re-encrypting every stored secret under the first key of TOKENKEEPER_SECRET_KEY.

Rotation: put a new key first (keep the old ones after it), restart, run
``tokenkeeper rotate-keys``; then the old keys can be dropped. Each integration is
re-sealed under its refresh lock with a version-checked write, so a refresh that
rotates a refresh token meanwhile is never overwritten. Afterwards Redis rewrites
its AOF, so the ciphertext under the old key leaves the disk too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from workers.engine.policy import LOCK_WAIT
from workers.engine.runtime import Runtime
from workers.errors import TokenkeeperError
from workers.store import KEEP_SCHEDULE

# A batch an operator runs once over every integration waits longer than a single change, so that
# fewer names are left over as busy.
ROTATION_LOCK_WAIT = 3 * LOCK_WAIT


@dataclass(frozen=True)
class RotationReport:
    rotated: int
    busy: list[str]


def rotate_secrets(runtime: Runtime) -> RotationReport:
    store, box = runtime.store, runtime.box
    rotated, busy = 0, []
    given_key = store.given_key()
    if given_key is not None:
        # The digests' key too: once the old keys are dropped, `plan` must still compare against them.
        store.put_given_key(box.rotate(given_key), replace=True)
    for name in store.names():
        lock = store.acquire_within(name, runtime.settings.lock_ttl, ROTATION_LOCK_WAIT)
        if lock is None:
            busy.append(name)
            continue
        try:
            record = store.load(name)
            if record is None:
                continue
            sealed = box.rotate(record.sealed_secrets)
            if store.write(lock, record.version, {"secrets": sealed}, {}, {}, KEEP_SCHEDULE) > 0:
                rotated += 1
            else:
                busy.append(name)
        finally:
            store.release(lock)
    return RotationReport(rotated, busy)


@dataclass(frozen=True)
class DiskReport:
    rewrote_aof: bool
    saved_snapshot: bool


def purge_old_ciphertext(client: redis.Redis, timeout: float = 300.0, poll: float = 0.1) -> DiskReport:
    """Rewrite what Redis keeps on disk so the values replaced by a rotation leave it.

    An AOF holds every write ever made until it is rewritten, so without this the
    secrets sealed under the old key stay readable on disk to whoever gets the old key.
    Waits for the rewrite (and a snapshot, where snapshots are kept) to finish.
    """
    info = client.info("persistence")
    rewrote = saved = False
    if int(info.get("aof_enabled", 0)):
        wait_idle(client, timeout, poll)
        try:
            client.bgrewriteaof()
        except redis.ResponseError as exc:
            # Only "already in progress" is expected here; one started before our writes does not count.
            if "in progress" not in str(exc):
                raise
            wait_idle(client, timeout, poll)
            client.bgrewriteaof()
        rewrote = True
        wait_idle(client, timeout, poll)
        if client.info("persistence").get("aof_last_bgrewrite_status") != "ok":
            raise TokenkeeperError("Redis failed to rewrite its AOF (see its log); run BGREWRITEAOF again")
    if int(info.get("rdb_saves", 0)) or _snapshots_configured(client):
        # A snapshot written before the rotation holds the old ciphertext too.
        wait_idle(client, timeout, poll)
        client.bgsave()
        saved = True
        wait_idle(client, timeout, poll)
    return DiskReport(rewrote, saved)


def _snapshots_configured(client: redis.Redis) -> bool:
    try:
        return bool(str(client.config_get("save").get("save", "")).strip())
    except redis.ResponseError:
        # A managed Redis may refuse CONFIG; its snapshots are its operator's to manage.
        return False


def wait_idle(client: redis.Redis, timeout: float = 300.0, poll: float = 0.1) -> None:
    """Return once Redis has no AOF rewrite or snapshot running or scheduled."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.info("persistence")
        busy = (
            int(info.get("aof_rewrite_in_progress", 0))
            or int(info.get("aof_rewrite_scheduled", 0))
            or int(info.get("rdb_bgsave_in_progress", 0))
        )
        if not busy:
            return
        if time.monotonic() > deadline:
            raise TokenkeeperError(f"Redis was still writing its files to disk after {timeout:g}s")
        # Redis announces no end of a background rewrite; INFO is the only way to see it.
        time.sleep(poll)
