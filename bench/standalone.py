"""The deployment as a user starts it: `tokenkeeper standalone`, default settings, many integrations.

    python -m bench.standalone --integrations 100000 --minutes 20 --min-lifetime 360 --max-lifetime 720

`tokenkeeper standalone` starts its own Redis (persistent, with passwords), a worker, beat, the
callback app and Flower, with nothing set but its ports, its data directory and
TOKENKEEPER_ALLOW_PRIVATE_NETWORKS (the token server listens on 127.0.0.1). The integrations are
seeded into its Redis (what creation writes; bench.create measures creation), their first refreshes
spread so the run starts near the steady rate. A reader samples 200 random tokens every 100 ms.
Reported: expired reads, refreshes/s achieved against the tick's own figure of what is needed,
lateness against plan, refreshes before half a lifetime, CPU and RSS of every process, RSS against
the same deployment with --baseline-integrations, Redis bytes per integration.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.common import (
    LOCAL_NETWORKS,
    ROOT,
    Reader,
    cpu_seconds,
    free_port,
    median,
    percentile,
    rss_mib,
    seed,
    token_server,
    token_stats,
    tree_pids,
    wait_for,
)
from config.local import SECRET_KEY_FILE, SERVICE_PASSWORD_FILE

ROLES = ("worker", "beat", "callback app", "flower", "redis")


class Standalone:
    """`tokenkeeper standalone` in a data directory of its own, on free ports."""

    def __init__(self, data: Path, log: Path) -> None:
        self.redis_port = free_port()
        web = free_port()
        # Nothing of ours from the calling shell: defaults, as a user gets them.
        env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENKEEPER_")}
        env.update(
            LOCAL_NETWORKS,
            TOKENKEEPER_DATA_DIR=str(data),
            TOKENKEEPER_REDIS_PORT=str(self.redis_port),
            TOKENKEEPER_BIND=f"127.0.0.1:{web}",
            TOKENKEEPER_PUBLIC_URL=f"http://127.0.0.1:{web}",
            TOKENKEEPER_FLOWER_PORT=str(free_port()),
        )
        self.data = data
        self.handle = open(log, "wb")  # noqa: SIM115 -- closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "standalone"],
            cwd=ROOT,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: (data / SERVICE_PASSWORD_FILE).exists(), 60, "standalone's Redis password")
        password = (data / SERVICE_PASSWORD_FILE).read_text().strip()
        self.url = f"redis://tokenkeeper:{password}@127.0.0.1:{self.redis_port}/0"
        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        wait_for(self._ticking, 120, "standalone's beat to tick")
        self.key = (data / SECRET_KEY_FILE).read_text().strip()

    def _ticking(self) -> bool:
        try:
            return self.client.exists("tokenkeeper:beat:last_tick") == 1 and len(self.pids()) == len(ROLES)
        except redis.RedisError:
            return False

    def pids(self) -> dict[str, int]:
        """Each role's top process (its own children counted with it)."""
        found: dict[str, int] = {}
        for child in tree_pids(self.popen.pid)[1:]:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            for role, marker in (
                ("worker", "celery_app worker"),
                ("beat", "celery_app beat"),
                ("callback app", "gunicorn"),
                ("flower", "celery_app flower"),
                ("redis", "redis-server"),
            ):
                if marker in command and role not in found:
                    found[role] = child
        return found

    def cpu(self) -> dict[str, float]:
        return {role: sum(cpu_seconds(p) for p in tree_pids(pid)) for role, pid in self.pids().items()}

    def rss(self) -> dict[str, float]:
        return {role: sum(rss_mib(p) for p in tree_pids(pid)) for role, pid in self.pids().items()}

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.handle.close()


def baseline_rss(count: int, token_url: str, seconds: float, log_dir: Path) -> dict[str, float]:
    """Every process's RSS (MiB) with ``count`` integrations being refreshed for ``seconds``."""
    service = Standalone(log_dir / "baseline-data", log_dir / "baseline.log")
    try:
        # Other names than the main run's: the token server must not see these clients again there.
        seed(service.url, service.key, token_url, count, first_due=time.time() + 5, spread=seconds / 2, prefix="m")
        time.sleep(seconds)  # the phase's length: a duration, not a wait for an event
        return service.rss()
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--integrations", type=int, default=100_000)
    parser.add_argument("--baseline-integrations", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--min-lifetime", type=float, default=360)
    parser.add_argument("--max-lifetime", type=float, default=720)
    parser.add_argument("--memory-seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        port = free_port()
        server = token_server(port, log_dir, args.min_lifetime, args.max_lifetime)
        token_url = f"http://127.0.0.1:{port}/token"
        try:
            small = baseline_rss(args.baseline_integrations, token_url, args.memory_seconds, log_dir)
            service = Standalone(log_dir / "data", log_dir / "standalone.log")
            try:
                run(args, service, server.pid, port, token_url, small)
            finally:
                service.stop()
        finally:
            server.stop()


def run(args: argparse.Namespace, service: Standalone, server_pid: int, port: int, token_url: str, small) -> None:
    n, client = args.integrations, service.client
    empty = int(client.info("memory")["used_memory"])
    seeding = time.time()
    # First refreshes from 90 s on (after seeding), spread so the run starts near the steady rate.
    steady = n / ((args.min_lifetime + args.max_lifetime) / 2 * 0.75)
    seed(service.url, service.key, token_url, n, first_due=seeding + 90, spread=n / steady)
    seeded_in = time.time() - seeding
    per_integration = (int(client.info("memory")["used_memory"]) - empty) / n
    names = [f"b{i}" for i in range(n)]
    reader = Reader(client, names)
    peak: dict[str, float] = {}
    wait_for(lambda: time.time() > seeding + 90, 120, "the first refreshes")
    start_stats, cpu_start = token_stats(port), {**service.cpu(), "token server": cpu_seconds(server_pid)}
    started = time.monotonic()
    deadline, next_rss = started + args.minutes * 60, started
    while time.monotonic() < deadline:
        reader.look()
        if time.monotonic() >= next_rss:
            for role, mib in service.rss().items():
                peak[role] = max(peak.get(role, 0.0), mib)
            next_rss += 30
        time.sleep(0.1)  # the reader's sampling period
    elapsed = time.monotonic() - started
    end_stats = token_stats(port)
    cpu_end = {**service.cpu(), "token server": cpu_seconds(server_pid)}
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(f"tokenkeeper:integration:{name}", "lateness")
    lateness = [float(value) for value in pipe.execute() if value]
    capacity = client.hgetall("tokenkeeper:beat:capacity")
    yielded = sum(int(count) for count in client.hvals("tokenkeeper:metrics:cap_yielded"))
    refreshes = end_stats["requests"] - start_stats["requests"]
    print(
        f"tokenkeeper standalone, default settings; {n} integrations, lifetimes {args.min_lifetime:g}-"
        f"{args.max_lifetime:g} s, seeded in {seeded_in:.0f} s"
    )
    print(
        f"ran {elapsed / 60:.1f} min: {refreshes} refreshes, {refreshes / elapsed:.1f} refreshes/s; tick's figures "
        f"at the end: need {capacity.get('need')}/s, doing {capacity.get('doing')}/s, waiting {capacity.get('waiting')}"
    )
    print(
        f"reader: {reader.reads} sampled reads, {reader.expired} expired or not active, "
        f"worst headroom {reader.worst_headroom:.1f} s"
    )
    print(f"refreshes before half a lifetime (token server's count): {end_stats['early']}")
    print(f"rate cap: {yielded} refreshes sent at their deadline past a booked cap")
    print(
        f"lateness against plan, last refresh of {len(lateness)} integrations: p50 {median(lateness):.3f} s, "
        f"p90 {percentile(lateness, 90):.3f} s, p99 {percentile(lateness, 99):.3f} s, max {max(lateness):.3f} s"
    )
    cpu = {role: cpu_end[role] - cpu_start.get(role, 0.0) for role in cpu_end}
    print(
        "CPU: "
        + ", ".join(f"{role} {seconds / elapsed * 100:.0f}% of a core" for role, seconds in cpu.items())
        + f"; total {sum(cpu.values()) / elapsed:.2f} cores"
    )
    print(
        f"RSS MiB at {args.baseline_integrations} -> {n}: "
        + ", ".join(
            f"{role} {small.get(role, 0):.0f} -> {peak.get(role, 0):.0f} ({peak.get(role, 0) / small[role]:.2f}x)"
            for role in ROLES
            if small.get(role)
        )
    )
    print(f"Redis: {per_integration:.0f} bytes per integration (after seeding)")


if __name__ == "__main__":
    main()
