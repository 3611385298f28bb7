"""Integrations stay fresh for real: producer tasks, worker, beat, Redis and a token server."""

from __future__ import annotations

import statistics
import time

import pytest
import redis

from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import TokenServer
from workers.producer import send

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

READ_SECONDS = 30.0


def test_fifty_integrations_stay_fresh_without_refresh_token_reuse(
    token_server: TokenServer, start_processes, celery_client, settings, redis_client: redis.Redis
) -> None:
    """For 30 s, 50 integrations on 5-second tokens are always readable and valid; no refresh token is reused."""
    start_processes("worker", concurrency=2)
    names = [f"cc{i}" for i in range(25)] + [f"rt{i}" for i in range(25)]
    pending = [
        send(
            celery_client,
            "tokenkeeper.create_integration",
            cc_spec(token_server, name) if name.startswith("cc") else rt_spec(token_server, name),
        )
        for name in names
    ]
    created = [result.get(timeout=30) for result in pending]
    assert {item["status"] for item in created} == {"active"}
    start_processes("beat")

    reads = expired = 0
    min_headroom = float("inf")
    deadline = time.monotonic() + READ_SECONDS
    while time.monotonic() < deadline:
        pipe = redis_client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(f"tokenkeeper:token:{name}")
        now = time.time()
        for token in pipe.execute():
            reads += 1
            headroom = float(token["expires_at"]) - now
            min_headroom = min(min_headroom, headroom)
            if token["status"] != "active" or headroom <= 0 or not token_server.is_valid(token["access_token"], now):
                expired += 1
        time.sleep(0.05)  # the reader's polling period, not synchronisation

    refreshes = token_server.count("refresh_token") + token_server.count("client_credentials") - len(names)
    lateness = [float(redis_client.hget(f"tokenkeeper:integration:{name}", "lateness") or 0) for name in names]
    print(
        f"\nreads={reads} expired={expired} refreshes={refreshes} min_headroom={min_headroom:.2f}s "
        f"lateness p50={statistics.median(lateness):.3f}s max={max(lateness):.3f}s"
    )
    assert expired == 0
    assert token_server.reused == []
    # 5 s tokens refreshed from half their life on: each integration at least 8 times in 30 s.
    assert refreshes >= 50 * 8
    assert min_headroom > 0
