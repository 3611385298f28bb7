"""Fixtures shared by every test: a real redis-server per session, settings, a token server."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from config import Settings, load_settings
from tests.support.ports import free_port
from tests.support.token_server import TokenServer
from workers.engine.runtime import Runtime, build_runtime
from workers.ops.redis_server import RedisUsers, start_server, wait_ready


@pytest.fixture(scope="session")
def redis_users() -> RedisUsers:
    """The session Redis's passwords: the `default` user is off, so nothing passes without one."""
    return RedisUsers.generate()


@pytest.fixture(scope="session")
def redis_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session Redis keeps its AOF (for tests that look at what reaches the disk)."""
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="session")
def redis_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def redis_server(redis_users: RedisUsers, redis_data_dir: Path, redis_port: int) -> Iterator[str]:
    """The session's Redis, as production runs it: AOF every second, ACL users only; its service URL."""
    # Values stored as they are (no LZF, no RDB preamble), so a test can grep the files for a secret.
    process = start_server(
        redis_port,
        redis_data_dir,
        persistent=True,
        users=redis_users,
        extra_config=["rdbcompression no", "aof-use-rdb-preamble no"],
    )
    url = redis_users.service_url(redis_port)
    try:
        wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def runner_url(redis_url: str, redis_users: RedisUsers, redis_port: int) -> str:
    """The workflow runners' URL for the session Redis (user `runner`)."""
    return redis_users.runner_url(redis_port)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def environ(redis_url: str, secret_key: str, tmp_path: Path) -> dict[str, str]:
    """TOKENKEEPER_* variables for a test: its own Redis, a key, fast timings."""
    web_port = free_port()
    return {
        "TOKENKEEPER_REDIS_URL": redis_url,
        "TOKENKEEPER_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "TOKENKEEPER_BIND": f"127.0.0.1:{web_port}",
        "TOKENKEEPER_SECRET_KEY": secret_key,
        "TOKENKEEPER_DATA_DIR": str(tmp_path / "data"),
        "TOKENKEEPER_REFRESH_LEAD": "1.5",
        "TOKENKEEPER_REFRESH_JITTER": "1",
        "TOKENKEEPER_SCHEDULE_INTERVAL": "0.5",
        "TOKENKEEPER_SCHEDULE_HORIZON": "2",
        "TOKENKEEPER_LOCK_TTL": "10",
        "TOKENKEEPER_LOST_AFTER": "10",
        "TOKENKEEPER_HTTP_CONNECT_TIMEOUT": "2",
        "TOKENKEEPER_HTTP_READ_TIMEOUT": "3",
        "TOKENKEEPER_BACKOFF_BASE": "0.5",
        "TOKENKEEPER_BACKOFF_MAX": "2",
        "TOKENKEEPER_MIN_REFRESH_INTERVAL": "0.25",
        # Token servers in tests listen on 127.0.0.1, which production refuses by default.
        "TOKENKEEPER_ALLOW_PRIVATE_NETWORKS": "true",
    }


@pytest.fixture
def settings(environ: dict[str, str]) -> Settings:
    return load_settings(environ)


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    # Tests that call the domain in-process hand it plain specs: they stand for the worker after
    # the message was opened. Sealing on the wire is pinned by tests/integration/test_secrets.py.
    return build_runtime(dataclasses.replace(settings, accept_plain_secrets=True))


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer().start()
    yield server
    server.stop()


class SpanRecorder(SimpleSpanProcessor):
    """Hands finished spans to the in-memory exporter only while a test looks (``local_spans``): the rest of
    the session does not pile them up."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(exporter)
        self.exporter = exporter
        self.watching = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.watching:
            super().on_end(span)


@pytest.fixture(scope="session")
def _span_recorder() -> SpanRecorder:
    # A process has one tracer provider for good (OpenTelemetry refuses a second): installed once, here.
    recorder = SpanRecorder(InMemorySpanExporter())
    provider = TracerProvider(resource=Resource.create({"service.name": "tokenkeeper-tests"}))
    provider.add_span_processor(recorder)
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "a tracer provider was installed before the tests' own"
    return recorder


@pytest.fixture
def local_spans(_span_recorder: SpanRecorder) -> Iterator[InMemorySpanExporter]:
    """The spans this test process records (the SDK's in-memory exporter), from none at the test's start."""
    _span_recorder.exporter.clear()
    _span_recorder.watching = True
    yield _span_recorder.exporter
    _span_recorder.watching = False
    _span_recorder.exporter.clear()
