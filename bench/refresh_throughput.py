"""Refresh throughput: the whole pipeline against a bare requests loop, same number of processes.

    python -m bench.refresh_throughput [--integrations 3000] [--processes 2] [--pool prefork] [--delay 0.05]
                                       [--rounds 5]

Baseline: P processes, each a keep-alive ``requests.Session`` POSTing the same
client-credentials request to the same local token server as fast as it can, measured
before and after the pipeline and averaged (the machine's speed drifts).
Pipeline: N integrations all due now; beat's tick claims them, the broker
carries them, P worker processes refresh them (lock, token request, versioned
Lua write, unlock). Both rates are measured in this run; the ratio is printed, and the CPU each
process spent per request. ``--delay`` makes every token answer take that long,
as a provider across a network does: then the loop waits, and the pipeline
overlaps its requests.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

import redis
import requests

from bench.common import (
    LOCAL_NETWORKS,
    Process,
    celery,
    cpu_seconds,
    free_port,
    median,
    own_redis,
    seed,
    token_server,
    token_stats,
    tree_pids,
    wait_for,
    worker,
)
from workers.crypto.secretbox import generate_key
from workers.oauth.token_client import basic_authorization


class Sampler:
    """The token server's request count every few milliseconds, for both sides alike.

    ``sustained`` is the rate between the moments 10 % and 90 % of the requests had been served: the
    pipeline's start (the first claim, the pool's first batches) and tail (the last batch on one
    process while the other idles), and the loops' process start and stop, are left out on both sides.
    """

    def __init__(self, port: int, interval: float = 0.02) -> None:
        self.port, self.interval = port, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), token_stats(self.port)["requests"]))
            self._stop.wait(self.interval)

    def sustained(self, low: float = 0.1, high: float = 0.9) -> float:
        first, last = self.samples[0][1], self.samples[-1][1]
        total = last - first

        def when(fraction: float) -> tuple[float, int]:
            return next((t, c) for t, c in self.samples if c - first >= fraction * total)

        (t_low, c_low), (t_high, c_high) = when(low), when(high)
        return (c_high - c_low) / (t_high - t_low)


def _hammer(url: str, seconds: float, counter, usage) -> None:
    used = time.process_time()
    session = requests.Session()
    headers = {"Authorization": basic_authorization("bench", "s"), "Accept": "application/json"}
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        session.post(url, data={"grant_type": "client_credentials"}, headers=headers, timeout=10).json()
        done += 1
    with counter.get_lock():
        counter.value += done
    with usage.get_lock():
        usage.value += time.process_time() - used


def baseline(
    url: str, server: Process, port: int, processes: int, seconds: float
) -> tuple[float, float, dict[str, float]]:
    """POSTs per second (whole run, sustained), and CPU milliseconds per POST of the loops and the token server."""
    counter = multiprocessing.Value("i", 0)
    usage = multiprocessing.Value("d", 0.0)
    workers = [multiprocessing.Process(target=_hammer, args=(url, seconds, counter, usage)) for _ in range(processes)]
    served = _cpu(server.pid)
    with Sampler(port) as sampler:
        start = time.monotonic()
        for process in workers:
            process.start()
        for process in workers:
            process.join()
        rate = counter.value / (time.monotonic() - start)
    served = _cpu(server.pid) - served
    cpu = {"loops": usage.value * 1000 / counter.value, "token server": served * 1000 / counter.value}
    return rate, sampler.sustained(), cpu


def _cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree_pids(pid))


def pipeline(
    redis_url: str, url: str, server: Process, port: int, count: int, processes: int, pool: str, log_dir: Path
) -> tuple[float, dict[str, float]]:
    """Refreshes per second, and CPU milliseconds per refresh of each process while they ran."""
    key = generate_key()
    seed(redis_url, key, url, count, first_due=time.time() + 3600, spread=0)
    env = {
        **os.environ,
        **LOCAL_NETWORKS,
        "TOKENKEEPER_REDIS_URL": redis_url,
        "TOKENKEEPER_SECRET_KEY": key,
        "TOKENKEEPER_DATA_DIR": str(log_dir),
        "TOKENKEEPER_MAX_REFRESH_RATE": "0",
        "TOKENKEEPER_SCHEDULE_INTERVAL": "0.5",
        "TOKENKEEPER_INSECURE_HTTP_HOSTS": "",
    }
    service = worker(env, log_dir, pool, processes)
    client = redis.Redis.from_url(redis_url)
    redis_pid = int(client.info("server")["process_id"])
    try:
        time.sleep(5)  # worker start-up: not part of what is measured
        before = token_stats(port)["requests"]
        now = time.time()
        # Everything due now: the next tick claims it all.
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.zadd("tokenkeeper:schedule", {f"b{i}": now})
            pipe.hset(f"tokenkeeper:integration:b{i}", "refresh_at", repr(now))
        pipe.execute()
        beat = celery("beat", env, log_dir, "--loglevel", "WARNING", "-s", str(log_dir / "beat-schedule"))
        pids = {"worker": service.pid, "beat": beat.pid, "redis": redis_pid, "token server": server.pid}
        try:
            # Timed from the first refresh to the last: beat's own start-up is not the pipeline.
            wait_for(lambda: token_stats(port)["requests"] > before, 60, "the first refresh", 0.01)
            with Sampler(port) as sampler:
                start, at_start = time.monotonic(), token_stats(port)
                first = at_start["requests"]
                cpu = {role: _cpu(pid) for role, pid in pids.items()}
                wait_for(lambda: token_stats(port)["requests"] - before >= count, 600, "every refresh", 0.05)
                elapsed = time.monotonic() - start
            done = before + count - first
            cpu = {role: (_cpu(pid) - cpu[role]) * 1000 / done for role, pid in pids.items()}
            # Each new connection costs both sides a handshake, and a thread at the token server.
            cpu["connections per 1000"] = (token_stats(port)["connections"] - at_start["connections"]) * 1000 / done
        finally:
            beat.stop()
    finally:
        service.stop()
    return done / elapsed, sampler.sustained(), cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--integrations", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds the token server takes per answer (a provider's latency)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="baseline and pipeline measured this many times, alternately"
    )
    args = parser.parse_args()
    ratios, sustained_ratios = [], []
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp, own_redis() as redis_url:
            log_dir = Path(tmp)
            port = free_port()
            server = token_server(port, log_dir, delay=args.delay)
            url = f"http://127.0.0.1:{port}/token"
            try:
                # The loop before and after the pipeline, averaged: this machine's speed drifts by a third
                # from one minute to the next, and a drift between the two sides would pass for a ratio.
                before = baseline(url, server, port, args.processes, args.baseline_seconds)
                ours, ours_sustained, cpu = pipeline(
                    redis_url, url, server, port, args.integrations, args.processes, args.pool, log_dir
                )
                after = baseline(url, server, port, args.processes, args.baseline_seconds)
            finally:
                server.stop()
        base, base_sustained = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        base_cpu = {role: (before[2][role] + after[2][role]) / 2 for role in before[2]}
        ratios.append(ours / base)
        sustained_ratios.append(ours_sustained / base_sustained)
        if args.rounds > 1:
            print(f"round {round_}:")
        print(
            f"bare requests.Session loop, {args.processes} processes: {base:7.1f} POST/s"
            f" (sustained {base_sustained:7.1f}; before {before[0]:7.1f}, after {after[0]:7.1f})"
        )
        print(
            f"full pipeline, {args.pool} x{args.processes}, {args.integrations} integrations: {ours:7.1f} refreshes/s"
            f" (sustained {ours_sustained:7.1f})"
        )
        print(f"ratio {ours / base:.2f}, sustained {ours_sustained / base_sustained:.2f} (target >= 0.8)")
        print("CPU per request, ms: bare loop " + ", ".join(f"{role} {ms:.3f}" for role, ms in base_cpu.items()))
        print("CPU per refresh, ms: pipeline " + ", ".join(f"{role} {ms:.3f}" for role, ms in cpu.items()), flush=True)
    if args.rounds > 1:
        print(f"ratios {', '.join(f'{r:.2f}' for r in ratios)}; median {median(ratios):.2f}")
        print(
            f"sustained ratios {', '.join(f'{r:.2f}' for r in sustained_ratios)};"
            f" median {median(sustained_ratios):.2f} (target >= 0.8)"
        )


if __name__ == "__main__":
    main()
