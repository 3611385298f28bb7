"""Re-encrypting every stored secret under the first key of TOKENKEEPER_SECRET_KEY.

Rotation: put a new key first (keep the old ones after it), restart, run
``tokenkeeper rotate-keys``; then the old keys can be dropped. Each integration is
re-sealed under its refresh lock with a version-checked write, so a refresh that
rotates a refresh token meanwhile is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.runtime import Runtime
from workers.store import KEEP_SCHEDULE

LOCK_WAIT = 30.0


@dataclass(frozen=True)
class RotationReport:
    rotated: int
    busy: list[str]


def rotate_secrets(runtime: Runtime) -> RotationReport:
    store, box = runtime.store, runtime.box
    rotated, busy = 0, []
    for name in store.names():
        lock = store.acquire_within(name, runtime.settings.lock_ttl, LOCK_WAIT)
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
