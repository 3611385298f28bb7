"""``tokenkeeper standalone``: every part as its own child process, stopped together.

Redis is used where ``TOKENKEEPER_REDIS_URL`` answers; otherwise, for a loopback
URL, a server is started with its data (AOF) under the data directory. Then a
Celery worker, beat, the callback app under gunicorn and Flower, each a child
an operator can tell apart in ``ps``. SIGINT or SIGTERM stops them all.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from config import Settings
from workers.errors import ConfigurationError
from workers.redis_server import is_up, start_server, wait_ready
from workers.secretbox import generate_key
from workers.spec import is_loopback

STOP_GRACE = 15.0


def ensure_secret_key(settings: Settings, environ: dict[str, str]) -> str | None:
    """Use TOKENKEEPER_SECRET_KEY, or a key kept in the data directory (made on first run)."""
    if settings.secret_keys:
        return None
    key_file = Path(settings.data_dir) / "secret.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(generate_key() + "\n")
    environ["TOKENKEEPER_SECRET_KEY"] = key_file.read_text().strip()
    return str(key_file)


def ensure_operator_password(settings: Settings, environ: dict[str, str]) -> str | None:
    """Use TOKENKEEPER_OPERATOR_PASSWORD, or one kept in the data directory (made on first run)."""
    if settings.operator_password:
        return None
    password_file = Path(settings.data_dir) / "operator.password"
    if not password_file.exists():
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
    environ["TOKENKEEPER_OPERATOR_PASSWORD"] = password_file.read_text().strip()
    return str(password_file)


def child_commands(settings: Settings) -> dict[str, list[str]]:
    celery = [sys.executable, "-m", "celery", "-A", "workers.celery_app"]
    level = settings.log_level
    return {
        "worker": [*celery, "worker", "-Q", settings.queue, "-n", "tokenkeeper@%h", "--loglevel", level],
        "beat": [*celery, "beat", "--loglevel", level,
                 "-s", str(Path(settings.data_dir) / "celerybeat-schedule")],
        "callback app": [sys.executable, "-m", "gunicorn", "--bind", settings.bind,
                         "-c", "python:callback_app.gunicorn_conf", "callback_app:create_app()"],
        # Credentials reach Flower through its environment (FLOWER_BASIC_AUTH), not argv, which ps shows.
        "flower": [*celery, "flower", "--address=127.0.0.1", f"--port={settings.flower_port}"],
    }


def run(settings: Settings, environ: Mapping[str, str]) -> int:
    env = dict(environ)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = ensure_secret_key(settings, env)
    password_file = ensure_operator_password(settings, env)
    env["FLOWER_BASIC_AUTH"] = f"{settings.operator_user}:{env['TOKENKEEPER_OPERATOR_PASSWORD']}"
    redis_process = None
    if settings.redis_sentinel_master:
        print(f"redis        using the sentinels of {settings.redis_sentinel_master!r}")
    elif not is_up(settings.redis_url):
        parts = urlsplit(settings.redis_url)
        if parts.scheme != "redis" or not is_loopback(parts.hostname or ""):
            raise ConfigurationError(f"Redis at {settings.redis_url} does not answer")
        redis_process = start_server(parts.port or 6379, data_dir / "redis", persistent=True)
        wait_ready(settings.redis_url, redis_process)
        print(f"redis        started on {parts.hostname}:{parts.port or 6379}, data in {data_dir / 'redis'}")
    else:
        print(f"redis        using {settings.redis_url}")
    if key_file:
        print(f"secret key   {key_file} (set TOKENKEEPER_SECRET_KEY to use your own)")

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for label, command in child_commands(settings).items():
            children[label] = subprocess.Popen(command, env=env, start_new_session=True)
        print(f"worker       pid {children['worker'].pid}, queue {settings.queue}")
        print(f"beat         pid {children['beat'].pid}, tick every {settings.schedule_interval:g}s")
        print(f"callback app pid {children['callback app'].pid}, {settings.public_url}/oauth/callback")
        credentials = (f"user {settings.operator_user}, password "
                       f"{'in ' + password_file if password_file else 'from TOKENKEEPER_OPERATOR_PASSWORD'}")
        print(f"flower       pid {children['flower'].pid}, http://127.0.0.1:{settings.flower_port} ({credentials})")
        print(f"status page  {settings.public_url}/status ({credentials}); metrics at {settings.public_url}/metrics")
        print("Ctrl-C stops everything.", flush=True)
        exited = _wait(children, stop)
    finally:
        _stop_all(list(children.values()))
        if redis_process is not None:
            _stop_all([redis_process])
    if exited:
        print(f"tokenkeeper: {exited} exited unexpectedly; stopped the rest", file=sys.stderr)
        return 1
    return 0


def _wait(children: Mapping[str, subprocess.Popen[bytes]], stop: threading.Event) -> str | None:
    while not stop.wait(0.5):
        for label, child in children.items():
            if child.poll() is not None:
                return label
    return None


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
