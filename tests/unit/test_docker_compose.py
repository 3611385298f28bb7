"""docker-compose.yml runs every part with health checks, durable password-only Redis and Flower behind a password."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import redis as redis_py
import yaml

from workers.ops.redis_server import wait_ready

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_has_a_health_check_and_restarts() -> None:
    """redis, worker, beat, callback app and Flower, each health-checked and restarted if it dies."""
    services = compose()["services"]
    assert set(services) == {"redis", "worker", "beat", "callback", "flower"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name


def test_redis_is_durable_and_never_evicts() -> None:
    """AOF on with everysec fsync, noeviction, data on a volume."""
    redis = compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command and redis["volumes"]


def test_flower_needs_the_password_from_the_env_file() -> None:
    """Flower starts only with a password, passes it through its environment, and listens on loopback only."""
    flower = compose()["services"]["flower"]
    command = " ".join(flower["command"])
    assert "FLOWER_BASIC_AUTH" in command and "TOKENKEEPER_OPERATOR_PASSWORD" in command
    assert "--basic-auth" not in command
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert flower["env_file"] == "tokenkeeper.env"
    example = (ROOT / "tokenkeeper.env.example").read_text()
    assert "TOKENKEEPER_OPERATOR_PASSWORD=" in example and "TOKENKEEPER_SECRET_KEY=" in example


def test_the_callback_app_runs_under_gunicorn() -> None:
    """Never Flask's development server."""
    callback = compose()["services"]["callback"]
    assert callback["command"][0] == "gunicorn" and "python:callback_app.gunicorn_conf" in callback["command"]


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """Where the docker compose plugin exists, `docker compose config` validates the file."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        # No compose plugin on this machine (CI has only the docker client): the YAML checks above stand.
        assert compose()["services"]
        return
    env = tmp_path / "tokenkeeper.env"
    env.write_text((ROOT / "tokenkeeper.env.example").read_text())
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    result = subprocess.run(
        [docker, "compose", "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_env_example_filled_in_is_valid_settings() -> None:
    """Every variable the example names, the optional ones uncommented, loads without a settings error."""
    from cryptography.fernet import Fernet

    from config import load_settings

    filled = {
        "TOKENKEEPER_SECRET_KEY": Fernet.generate_key().decode(),
        "TOKENKEEPER_OPERATOR_PASSWORD": "pw",
        "TOKENKEEPER_WEBHOOK_SECRET": "hook-secret",
        "TOKENKEEPER_REDIS_URL": "redis://tokenkeeper:0123abcd@redis:6379/0",
    }
    environ = {}
    for line in (ROOT / "tokenkeeper.env.example").read_text().splitlines():
        line = line.removeprefix("#")
        if line.startswith("TOKENKEEPER_") and "=" in line:
            key, _, value = line.partition("=")
            environ[key] = value or filled[key]
    assert {"TOKENKEEPER_WEBHOOK_URL", "TOKENKEEPER_LOG_FORMAT"} <= set(environ)
    settings = load_settings(environ)
    assert settings.operator_password == "pw" and settings.log_format == "json"


def test_no_service_reaches_redis_without_credentials() -> None:
    """No service overrides the env file's TOKENKEEPER_REDIS_URL; health checks log in; the example asks for both."""
    services = compose()["services"]
    for name, service in services.items():
        assert service.get("env_file") == "tokenkeeper.env", name
        assert "TOKENKEEPER_REDIS_URL" not in (service.get("environment") or {}), name
        check = " ".join(service["healthcheck"]["test"])
        assert "redis-cli ping" not in check and "Redis(host=" not in check, name
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])
    example = (ROOT / "tokenkeeper.env.example").read_text()
    assert "TOKENKEEPER_REDIS_URL=" in example and "REDIS_RUNNER_PASSWORD=" in example
    assert "redis://tokenkeeper:PASSWORD@redis:6379/0" in example


def redis_startup_script() -> str:
    """The redis service's entrypoint script, as the container's shell sees it (compose turns $$ into $)."""
    entrypoint = compose()["services"]["redis"]["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    return entrypoint[2].replace("$$", "$")


def test_the_compose_redis_refuses_to_start_without_both_passwords(tmp_path: Path) -> None:
    """An env file without the service URL or the runner password stops the redis service with a reason."""
    script = redis_startup_script().replace("/data/", f"{tmp_path}/")
    for env, missing in (
        ({}, "TOKENKEEPER_REDIS_URL"),
        ({"TOKENKEEPER_REDIS_URL": "redis://redis:6379/0"}, "TOKENKEEPER_REDIS_URL"),
        ({"TOKENKEEPER_REDIS_URL": "redis://tokenkeeper:pw@redis:6379/0"}, "REDIS_RUNNER_PASSWORD"),
    ):
        result = subprocess.run(
            ["sh", "-c", script, "redis"],
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode != 0 and missing in result.stderr, (env, result.stderr)
    assert not (tmp_path / "users.acl").exists()


def test_the_compose_redis_lets_in_only_its_two_users(tmp_path: Path) -> None:
    """The redis service's own script, run with a real redis-server: anonymous and `default` refused, the service
    URL from the env file works, the runner reads token hashes only; the ACL file is 0600 and holds no password."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is required (the tests start real servers)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service_password, runner_password = secrets.token_hex(32), secrets.token_hex(32)
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_RUNNER_PASSWORD": runner_password,
        "TOKENKEEPER_REDIS_URL": f"redis://tokenkeeper:{service_password}@redis:6379/0",
    }
    # The image's entrypoint only drops root and sets umask before exec'ing redis-server.
    script = (
        redis_startup_script()
        .replace("/data/", f"{tmp_path}/")
        .replace("exec docker-entrypoint.sh redis-server", "exec redis-server")
    )
    arguments = [
        *compose()["services"]["redis"]["command"],
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(tmp_path),
        "--appendonly",
        "no",
    ]
    process = subprocess.Popen(
        ["sh", "-c", script, "redis", *arguments], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        service = redis_py.Redis(port=port, username="tokenkeeper", password=service_password, decode_responses=True)
        wait_ready(f"redis://tokenkeeper:{service_password}@127.0.0.1:{port}/0", process)
        service.hset("tokenkeeper:token:svc", mapping={"access_token": "at", "status": "active"})
        service.hset("tokenkeeper:integration:svc", "secrets", "sealed")
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port).ping()
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port, username="default", password="").ping()
        runner = redis_py.Redis(port=port, username="runner", password=runner_password, decode_responses=True)
        assert runner.hgetall("tokenkeeper:token:svc")["access_token"] == "at"
        for attempt in (
            lambda: runner.hgetall("tokenkeeper:integration:svc"),
            lambda: runner.lpush("tokenkeeper", "x"),
            lambda: runner.publish("c", "x"),
            lambda: runner.config_get("*"),
            lambda: runner.acl_list(),
        ):
            with pytest.raises(redis_py.exceptions.NoPermissionError):
                attempt()
        acl = tmp_path / "users.acl"
        assert acl.stat().st_mode & 0o777 == 0o600
        assert service_password not in acl.read_text() and runner_password not in acl.read_text()
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")
        assert service_password not in argv and runner_password not in argv
    finally:
        process.terminate()
        process.wait(10)
