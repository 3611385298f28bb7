"""Shared pieces of the benchmarks: an own redis-server, a token server process, percentiles, CPU times."""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.ops.redis_server import RedisUsers, start_server, wait_ready  # noqa: E402 -- after the checkout is put on sys.path

# The benchmarks' token servers listen on 127.0.0.1, which the service refuses unless allowed.
LOCAL_NETWORKS = {"TOKENKEEPER_ALLOW_PRIVATE_NETWORKS": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def own_redis() -> Iterator[str]:
    """A fresh redis-server on a free port, no persistence, stopped afterwards; its service URL."""
    port, users = free_port(), RedisUsers.generate()
    with tempfile.TemporaryDirectory() as data:
        process = start_server(port, Path(data), persistent=False, users=users)
        url = users.service_url(port)
        try:
            wait_ready(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(value) for value in fields[11:15]) / ticks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            pids.extend(tree_pids(int(child)))
    return pids


class Reader:
    """A workflow runner reading random tokens: counts reads, expired (or not active) ones, and the least headroom."""

    def __init__(self, client, names: Sequence[str], per_look: int = 200) -> None:
        self.client, self.names, self.per_look = client, list(names), per_look
        self.reads = self.expired = 0
        self.worst_headroom = float("inf")

    def look(self) -> None:
        """One sample of ``per_look`` tokens in one round trip (the client must decode responses)."""
        pipe = self.client.pipeline(transaction=False)
        for name in random.sample(self.names, self.per_look):
            pipe.hmget(f"tokenkeeper:token:{name}", "expires_at", "status")
        now = time.time()
        for expires_at, status in pipe.execute():
            self.reads += 1
            headroom = float(expires_at) - now
            self.worst_headroom = min(self.worst_headroom, headroom)
            if headroom <= 0 or status != "active":
                self.expired += 1


def wait_for(condition, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process of the benchmark, stopped on exit; its output goes to a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.handle = open(log, "wb")  # noqa: SIM115 -- closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait()
        self.handle.close()


def token_server(port: int, log_dir: Path, low: float = 600, high: float = 1200, delay: float = 0.0) -> Process:
    import urllib.request

    process = Process(
        [
            sys.executable,
            "-m",
            "bench.token_server",
            "--port",
            str(port),
            "--min-lifetime",
            str(low),
            "--max-lifetime",
            str(high),
            "--delay",
            str(delay),
        ],
        log_dir / "token_server.log",
    )

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1):
                return True
        except OSError:
            return False

    wait_for(up, 10, "the token server")
    return process


def token_stats(port: int) -> dict[str, int]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return json.load(response)


def celery(role: str, env: dict[str, str], log_dir: Path, *extra: str) -> Process:
    return Process(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", role, *extra], log_dir / f"{role}.log", env
    )


def worker(env: dict[str, str], log_dir: Path, pool: str = "prefork", processes: int = 2) -> Process:
    """A Celery worker as the benchmarks measure it: quiet logs, no start-up chatter between workers."""
    return celery(
        "worker",
        env,
        log_dir,
        "-Q",
        "tokenkeeper",
        "--pool",
        pool,
        "--concurrency",
        str(processes),
        "--loglevel",
        "WARNING",
        "--without-mingle",
        "--without-gossip",
    )


# The index cell (lua/index.lua) of a seeded integration: active, client credentials, no provider preset.
CELL = "active:client_credentials:"


def seed(
    redis_url: str,
    secret_key: str,
    token_url: str,
    count: int,
    *,
    first_due: float,
    spread: float,
    prefix: str = "b",
    managed: bool = False,
) -> None:
    """Store ``count`` client_credentials integrations directly, their first refreshes spread over ``spread`` s.

    The benchmark's subject is keeping integrations fresh, not creating them
    (bench/bulk_create.py measures that); seeding writes what creation would have
    written (the operators' index included), with the token state of an integration
    whose token is due for refresh.
    """
    import json

    import redis as redis_py

    from workers.crypto.secretbox import SecretBox
    from workers.engine.spec import validate_spec
    from workers.oauth.addresses import AddressPolicy

    client = redis_py.Redis.from_url(redis_url)
    box = SecretBox([secret_key])
    now = time.time()
    # Validated and sealed once: the specs differ only in name and client id (the secret is the same).
    spec = validate_spec(
        {
            "name": f"{prefix}0",
            "grant_type": "client_credentials",
            "client_id": f"{prefix}0",
            "client_secret": "s",
            "token_url": token_url,
        },
        # The token server listens on 127.0.0.1, as LOCAL_NETWORKS lets the workers reach.
        addresses=AddressPolicy(allow_private=True),
    )
    public, sealed = spec.public_fields(), box.seal(spec.secrets())
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        name = f"{prefix}{i}"
        due = first_due + spread * (i / max(count, 1))
        pipe.hset(
            f"tokenkeeper:integration:{name}",
            mapping={
                "grant_type": "client_credentials",
                "spec": json.dumps(
                    {**public, "name": name, "client_id": name, **({"managed_by": "bench"} if managed else {})}
                ),
                "secrets": sealed,
                "status": "active",
                "reason": "seeded",
                "status_at": repr(now),
                "created_at": repr(now),
                "refresh_at": repr(due),
                "attempts": 0,
                "version": 1,
                "expires_at": str(int(due + 60)),
                "index_cell": CELL,
                "lifetime": str(int(due + 60 - now)),
                # What an integration a file keeps has too (`tokenkeeper apply`): its fields' digests, as given.
                **({"given": f"0123abcd;a{i:011x};b{i:011x};c{i:011x};d{i:011x};F{i:011x}"} if managed else {}),
            },
        )
        pipe.hset(
            f"tokenkeeper:token:{name}",
            mapping={
                "access_token": "seeded",
                "token_type": "Bearer",
                "expires_at": str(int(due + 60)),
                "scope": "",
                "status": "active",
                "updated_at": str(int(now)),
            },
        )
        pipe.sadd("tokenkeeper:names", name)
        pipe.zadd("tokenkeeper:schedule", {name: due})
        pipe.zadd("tokenkeeper:index:names", {name: 0})
        pipe.zadd(f"tokenkeeper:index:cell:{CELL}", {name: 0})
        pipe.hincrby("tokenkeeper:metrics:lifetimes", str(int(due + 60 - now)), 1)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    # The cell's size as the index scripts keep it (one more of each seeded name).
    client.hincrby("tokenkeeper:index:cells", CELL, count)
