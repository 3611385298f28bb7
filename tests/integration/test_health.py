"""GET /healthz says which part is missing."""

from __future__ import annotations

import pytest

from callback_app import create_app

pytestmark = pytest.mark.e2e


def test_without_worker_or_beat_health_is_503_naming_them(settings) -> None:
    """Redis alone is not healthy: the JSON names the missing worker and beat."""
    client = create_app(settings).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["redis"] == "ok"
    assert checks["worker"].startswith("down") and checks["beat"].startswith("down")


def test_with_worker_and_beat_health_is_200(settings, start_processes, runtime) -> None:
    """Once a worker answers pings and beat's tick has run, /healthz is 200."""
    from tests.support.processes import wait_until

    start_processes("worker")
    start_processes("beat")
    wait_until(runtime.store.last_tick, 20, "the first scheduling tick")
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "ok"


def test_with_redis_down_health_is_503(environ) -> None:
    """Redis unreachable: 503 and the JSON says so."""
    from config import load_settings
    from tests.conftest import free_port

    settings = load_settings({**environ, "TOKENKEEPER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"].startswith("down")
