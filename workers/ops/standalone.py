"""``tokenkeeper standalone``: every part as its own child process, stopped together.

With ``TOKENKEEPER_REDIS_URL`` set, that Redis is used, unless it answers clients
that never log in. Without it, standalone runs its own Redis on 127.0.0.1
(``TOKENKEEPER_REDIS_PORT``), AOF under the data directory, ``default`` user off,
and the ``tokenkeeper`` and ``runner`` users' passwords generated into 0600 files
there; the children get the service URL through their environment, never argv.
Then a Celery worker, beat, the callback app under gunicorn and Flower, each a
child an operator can tell apart in ``ps``. SIGINT or SIGTERM stops them all.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from config import Settings
from config.local import OPERATOR_PASSWORD_FILE, RUNNER_PASSWORD_FILE, SECRET_KEY_FILE, SERVICE_PASSWORD_FILE
from workers.crypto.secretbox import generate_key
from workers.errors import ConfigurationError
from workers.ops.redis_server import (
    RedisUsers,
    answers_anonymously,
    describe,
    is_up,
    start_server,
    wait_ready,
)

STOP_GRACE = 15.0


# Flower keeps every task it has seen in memory, 100,000 by default: with many integrations that
# made it the largest process of the deployment (602 MiB). The newest 10,000 are what an operator
# looks at.
FLOWER_MAX_TASKS = 10_000
# The task list's columns: its default leaves the arguments out, so a scheduled refresh showed only as
# "tokenkeeper.refresh_batch"; with them it names the integrations it carries (secrets are redacted).
FLOWER_TASK_COLUMNS = "name,uuid,state,args,received,runtime,worker"


def ensure_secret_key(settings: Settings, environ: dict[str, str]) -> str | None:
    """Use TOKENKEEPER_SECRET_KEY, or a key kept in the data directory (made on first run)."""
    if environ.get("TOKENKEEPER_SECRET_KEY"):
        return None
    key_file = Path(settings.data_dir) / SECRET_KEY_FILE
    environ["TOKENKEEPER_SECRET_KEY"] = _private_file(key_file, generate_key)
    return str(key_file)


def ensure_operator_password(settings: Settings, environ: dict[str, str]) -> str | None:
    """Use TOKENKEEPER_OPERATOR_PASSWORD, or one kept in the data directory (made on first run)."""
    if environ.get("TOKENKEEPER_OPERATOR_PASSWORD"):
        return None
    password_file = Path(settings.data_dir) / OPERATOR_PASSWORD_FILE
    environ["TOKENKEEPER_OPERATOR_PASSWORD"] = _private_file(password_file, lambda: secrets.token_urlsafe(18))
    return str(password_file)


def ensure_redis_users(settings: Settings) -> RedisUsers:
    """The local Redis's passwords, generated into the data directory on first run."""
    data_dir = Path(settings.data_dir)
    return RedisUsers(
        service_password=_private_file(data_dir / SERVICE_PASSWORD_FILE, lambda: secrets.token_urlsafe(32)),
        runner_password=_private_file(data_dir / RUNNER_PASSWORD_FILE, lambda: secrets.token_urlsafe(32)),
    )


def _private_file(path: Path, make: Callable[[], str]) -> str:
    """The text of ``path``, a 0600 file, written with ``make()`` if it does not exist yet."""
    if not path.exists():
        # O_EXCL + mode: the file is never readable by others, not even for a moment.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(make() + "\n")
    path.chmod(0o600)
    return path.read_text().strip()


def local_redis(settings: Settings, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """Standalone's own Redis: reused if one from this data directory answers, else started.

    Returns the process started, if any; puts the service URL into ``env``.
    """
    users = ensure_redis_users(settings)
    port = settings.redis_port
    url = users.service_url(port)
    env["TOKENKEEPER_REDIS_URL"] = url
    data = Path(settings.data_dir) / "redis"
    if is_up(url):
        print(f"redis        using the one already running on 127.0.0.1:{port}, data in {data}")
        return None
    if answers_anonymously("127.0.0.1", port) or _port_taken(port):
        raise ConfigurationError(
            f"127.0.0.1:{port} is taken by another server: set TOKENKEEPER_REDIS_PORT "
            "to a free port, or TOKENKEEPER_REDIS_URL to use that Redis"
        )
    process = start_server(port, data, persistent=True, users=users, key_prefix=settings.key_prefix)
    wait_ready(url, process)
    print(
        f"redis        started on 127.0.0.1:{port}, data in {data}; "
        f"runners log in as user runner, password in {Path(settings.data_dir) / RUNNER_PASSWORD_FILE}"
    )
    return process


def refuse_open_redis(settings: Settings) -> None:
    """Refuse a Redis that answers clients that never log in: anyone could read secrets and queue tasks."""
    urls = {settings.redis_url, settings.broker_url, settings.result_backend}
    for url in sorted(urls):
        parts = urlsplit(url)
        if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
            continue
        if answers_anonymously(parts.hostname, parts.port or 6379, ssl=parts.scheme == "rediss"):
            raise ConfigurationError(
                f"Redis at {parts.hostname}:{parts.port or 6379} answers clients without a password: "
                "turn its default user off (ACL SETUSER default off) and put a user's credentials in "
                f"the URL (redis://tokenkeeper:PASSWORD@{parts.hostname}:{parts.port or 6379}/0), "
                "or unset TOKENKEEPER_REDIS_URL to let standalone run its own"
            )


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def child_commands(settings: Settings) -> dict[str, list[str]]:
    celery = [sys.executable, "-m", "celery", "-A", "workers.celery_app"]
    level = settings.log_level
    return {
        "worker": [*celery, "worker", "-Q", settings.queue, "-n", "tokenkeeper@%h", "--loglevel", level],
        "beat": [*celery, "beat", "--loglevel", level, "-s", str(Path(settings.data_dir) / "celerybeat-schedule")],
        "callback app": [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            settings.bind,
            "-c",
            "python:callback_app.gunicorn_conf",
            "callback_app:create_app()",
        ],
        # Credentials reach Flower through its environment (FLOWER_BASIC_AUTH), not argv, which ps shows.
        "flower": [
            *celery,
            "flower",
            "--address=127.0.0.1",
            f"--port={settings.flower_port}",
            f"--max_tasks={FLOWER_MAX_TASKS}",
            f"--tasks_columns={FLOWER_TASK_COLUMNS}",
        ],
    }


def run(settings: Settings, environ: Mapping[str, str]) -> int:
    env = dict(environ)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Passwords, keys and Redis's files are inside: no one else may even list it.
    data_dir.chmod(0o700)
    key_file = ensure_secret_key(settings, env)
    password_file = ensure_operator_password(settings, env)
    env["FLOWER_BASIC_AUTH"] = f"{settings.operator_user}:{env['TOKENKEEPER_OPERATOR_PASSWORD']}"
    redis_process = None
    if "TOKENKEEPER_REDIS_URL" not in environ:
        redis_process = local_redis(settings, env)
    elif settings.redis_sentinel_master:
        print(f"redis        using the sentinels of {settings.redis_sentinel_master!r}")
    else:
        refuse_open_redis(settings)
        if not is_up(settings.redis_url):
            raise ConfigurationError(
                f"Redis at {describe(settings.redis_url)} does not answer with the credentials in TOKENKEEPER_REDIS_URL"
            )
        print(f"redis        using {describe(settings.redis_url)}")
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
        credentials = (
            f"user {settings.operator_user}, password "
            f"{'in ' + password_file if password_file else 'from TOKENKEEPER_OPERATOR_PASSWORD'}"
        )
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
