"""docker-compose.yml runs every part with health checks, durable Redis and Flower behind a password."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

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
    result = subprocess.run([docker, "compose", "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_env_example_filled_in_is_valid_settings() -> None:
    """Every variable the example names, the optional ones uncommented, loads without a settings error."""
    from cryptography.fernet import Fernet

    from config import load_settings

    filled = {"TOKENKEEPER_SECRET_KEY": Fernet.generate_key().decode(), "TOKENKEEPER_OPERATOR_PASSWORD": "pw",
              "TOKENKEEPER_WEBHOOK_SECRET": "hook-secret"}
    environ = {}
    for line in (ROOT / "tokenkeeper.env.example").read_text().splitlines():
        line = line.removeprefix("#")
        if line.startswith("TOKENKEEPER_") and "=" in line:
            key, _, value = line.partition("=")
            environ[key] = value or filled[key]
    assert {"TOKENKEEPER_WEBHOOK_URL", "TOKENKEEPER_LOG_FORMAT"} <= set(environ)
    settings = load_settings(environ)
    assert settings.operator_password == "pw" and settings.log_format == "json"
