"""``GET /healthz``: 200 when Redis, a worker and beat are alive; the JSON says what is missing."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify

from callback_app import parts

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Any:
    settings, store, celery = parts.settings(), parts.runtime().store, parts.celery()
    checks: dict[str, Any] = {}
    try:
        store.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 -- any failure means "down", and is reported
        checks["redis"] = f"down: {type(exc).__name__}"
    if checks["redis"] != "ok" and settings.broker_url == settings.redis_url:
        # Pinging workers through a dead broker only waits out connection retries.
        checks["worker"] = "unknown: the broker (Redis) is down"
    else:
        try:
            replies = celery.control.ping(timeout=1.0) or []
            checks["worker"] = f"ok ({len(replies)})" if replies else "down: no worker answered"
        except Exception as exc:  # noqa: BLE001
            checks["worker"] = f"down: {type(exc).__name__}"
    if checks["redis"] == "ok":
        last = store.last_tick()
        limit = settings.schedule_interval * 3 + 5
        if last is None:
            checks["beat"] = "down: no scheduling tick seen yet"
        elif time.time() - last > limit:
            checks["beat"] = f"down: last scheduling tick {int(time.time() - last)}s ago"
        else:
            checks["beat"] = "ok"
    else:
        checks["beat"] = "unknown: Redis is down"
    healthy = all(value.startswith("ok") for value in checks.values())
    return jsonify({"status": "ok" if healthy else "unavailable", "checks": checks}), 200 if healthy else 503
