"""docker-compose.yml as written: its YAML read for what each service declares, and the redis service's start
script run against a real redis-server.

No docker here: `docker compose config` cannot run on this machine (nor in CI, which has only the docker
client), so nothing below shows that compose accepts the file, that the images build or that the health checks
pass; those need docker. What is checked is what the file says, and what the redis start script does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import redis as redis_py
import yaml

from tests.support.ports import free_port
from workers.ops.redis_server import wait_ready

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    """docker-compose.yml, parsed as YAML."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_declares_a_health_check_and_a_restart_policy() -> None:
    """`docker compose up` starts exactly redis, worker, beat, callback and flower (prometheus and grafana only
    with `--profile monitoring`); every service has a healthcheck and `restart: unless-stopped`."""
    services = compose()["services"]
    assert {name for name, service in services.items() if not service.get("profiles")} == {
        "redis",
        "worker",
        "beat",
        "callback",
        "flower",
    }
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name


def test_the_redis_command_asks_for_aof_and_noeviction() -> None:
    """The redis service's command turns AOF on with everysec fsync and noeviction, and the service has a volume."""
    redis = compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command and redis["volumes"]


def test_flower_takes_its_password_from_the_env_file_and_publishes_on_loopback() -> None:
    """Flower's command reads the operator password into FLOWER_BASIC_AUTH (not into argv), its port is published on
    127.0.0.1 only, and the env example names the password and the key."""
    flower = compose()["services"]["flower"]
    command = " ".join(flower["command"])
    assert "FLOWER_BASIC_AUTH" in command and "TOKENKEEPER_OPERATOR_PASSWORD" in command
    assert "--basic-auth" not in command
    assert "--max_tasks=10000" in command  # its memory bounded: it keeps every task it saw otherwise
    assert "--tasks_columns=name,uuid,state,args," in command  # the list shows what each task carries

    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert flower["env_file"] == "tokenkeeper.env"
    example = (ROOT / "tokenkeeper.env.example").read_text()
    assert "TOKENKEEPER_OPERATOR_PASSWORD=" in example and "TOKENKEEPER_SECRET_KEY=" in example


def test_the_callback_command_is_gunicorn() -> None:
    """The callback service's command is gunicorn with the project's config, never Flask's development server."""
    callback = compose()["services"]["callback"]
    assert callback["command"][0] == "gunicorn" and "python:callback_app.gunicorn_conf" in callback["command"]


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


def test_no_service_overrides_the_redis_url_or_pings_without_credentials() -> None:
    """Every service reads tokenkeeper.env and none overrides TOKENKEEPER_REDIS_URL; no health check pings Redis
    anonymously (the redis service's own check logs in with REDISCLI_AUTH); the env example asks for both passwords."""
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


def test_the_redis_start_script_refuses_to_start_without_both_passwords(tmp_path: Path) -> None:
    """The redis service's start script, run by sh here, exits naming the missing variable when the service URL
    (or its password) or the runner password is missing, and writes no ACL file."""
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


def test_the_redis_start_script_lets_in_only_its_two_users(tmp_path: Path) -> None:
    """The redis service's start script and command, run here with a real redis-server in place of the image's
    entrypoint: anonymous and `default` refused, the service URL works, the runner reads token hashes only; the
    ACL file is 0600 and holds no password, and no password is in the server's argv."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is required (the tests start real servers)")
    port = free_port()
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


def test_redis_keeps_integration_hashes_compact() -> None:
    """As the Redis standalone starts: hashes with values up to 512 bytes stay listpacks (see redis_server.py)."""
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--hash-max-listpack-value") + 1] == "512"
