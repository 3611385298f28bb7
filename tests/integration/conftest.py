"""Fixtures for end-to-end tests: real Celery worker and beat processes against the test Redis."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery
from flask.testing import FlaskClient

from callback_app import create_app
from config import Settings
from tests.support.browser import chromium
from tests.support.processes import CeleryProcess, start_beat, start_worker, wait_until
from tests.support.web import Gunicorn
from tests.support.webhook_receiver import WebhookReceiver
from workers.celery_app import create_celery
from workers.engine.runtime import Runtime


@pytest.fixture
def process_env(environ: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENKEEPER_")}
    return {**env, **environ}


@pytest.fixture
def celery_client(settings: Settings) -> Iterator[Celery]:
    app = create_celery(settings)
    yield app
    app.close()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def start_processes(
    process_env: dict[str, str], log_dir: Path, celery_client: Celery
) -> Iterator[Callable[..., CeleryProcess]]:
    started: list[CeleryProcess] = []

    def start(role: str, **options: object) -> CeleryProcess:
        if role == "worker":
            name = f"w{len(started)}"
            process = start_worker(process_env, log_dir, name, **options)  # type: ignore[arg-type]
            started.append(process)
            wait_until(lambda: _answers(celery_client, name), 30, f"worker {name} to answer a ping", 0.2)
        else:
            process = start_beat(process_env, log_dir)
            started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.kill()
        process.stop()  # closes its log


@pytest.fixture
def make_client(settings: Settings, runtime: Runtime, celery_client: Celery) -> Callable[..., FlaskClient]:
    """Flask test clients of the callback app in-process: each call a fresh cookie jar (another browser).

    Without arguments, on the test's settings, runtime and Celery client; given other settings (an operator
    password, a dead Redis), on an app built from those alone, as the service would build it.
    """
    app = create_app(settings, runtime=runtime, celery=celery_client)

    def make(other: Settings | None = None) -> FlaskClient:
        return (app if other is None else create_app(other)).test_client()

    return make


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    """The callback app's Flask test client on the test's settings, runtime and Celery client."""
    return make_client()


@pytest.fixture
def web(process_env: dict[str, str], log_dir: Path) -> Iterator[Gunicorn]:
    """The callback app under gunicorn, with the test's environment."""
    server = Gunicorn(process_env, log_dir)
    yield server
    server.stop()


@pytest.fixture
def web_factory(
    process_env: dict[str, str],
    environ: dict[str, str],
    log_dir: Path,
) -> Iterator[Callable[[], Gunicorn]]:
    """Starts the callback app under gunicorn once the test has set its environment."""
    started: list[Gunicorn] = []

    def start() -> Gunicorn:
        server = Gunicorn({**process_env, **environ}, log_dir)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    driver = chromium(tmp_path / "profile")
    yield driver
    driver.quit()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


def _answers(app: Celery, name: str) -> bool:
    replies = app.control.ping(timeout=0.5) or []
    return any(next(iter(reply)).startswith(name + "@") for reply in replies)
