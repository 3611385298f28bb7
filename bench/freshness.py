"""Freshness at scale: many integrations on one machine, for a long while, sampled by a reader.

    python -m bench.freshness --integrations 100000 --minutes 20

A token server process gives each client a lifetime between --min-lifetime and
--max-lifetime seconds (10-20 min by default). Integrations are seeded with their
first refreshes spread over --spread seconds, then a prefork worker (2 processes)
and beat keep them fresh while a reader samples random tokens every 100 ms.
Reported: refreshes/s, expired reads, refreshes before half a lifetime (counted
by the token server), lateness of refreshes against their plan, CPU per process,
RSS of worker and beat against a run with --baseline-integrations, Redis bytes
per integration.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import redis

from bench.common import (
    LOCAL_NETWORKS,
    Reader,
    celery,
    cpu_seconds,
    free_port,
    median,
    own_redis,
    percentile,
    rss_mib,
    seed,
    token_server,
    token_stats,
    tree_pids,
    worker,
)
from workers.crypto.secretbox import generate_key


def run_service(redis_url: str, key: str, log_dir: Path, rate: float | None) -> tuple:
    env = {
        **os.environ,
        **LOCAL_NETWORKS,
        "TOKENKEEPER_REDIS_URL": redis_url,
        "TOKENKEEPER_SECRET_KEY": key,
        "TOKENKEEPER_DATA_DIR": str(log_dir),
    }
    if rate is not None:
        env["TOKENKEEPER_MAX_REFRESH_RATE"] = str(rate)
    service = worker(env, log_dir)
    beat = celery("beat", env, log_dir, "--loglevel", "WARNING", "-s", str(log_dir / "beat-schedule"))
    return service, beat


def tree_rss(pid: int) -> float:
    return sum(rss_mib(p) for p in tree_pids(pid))


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree_pids(pid))


def memory_phase(count: int, token_url: str, seconds: float) -> tuple[float, float]:
    """Worker and beat RSS (MiB) with ``count`` integrations being refreshed."""
    with tempfile.TemporaryDirectory() as tmp, own_redis() as url:
        key = generate_key()
        # Other names than the main run's: the token server must not see these clients again there.
        seed(url, key, token_url, count, first_due=time.time() + 10, spread=seconds, prefix="m")
        worker, beat = run_service(url, key, Path(tmp), rate=1000)
        try:
            time.sleep(seconds)  # the phase's length: a duration, not a wait for an event
            return tree_rss(worker.pid), tree_rss(beat.pid)
        finally:
            beat.stop()
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--integrations", type=int, default=100_000)
    parser.add_argument("--baseline-integrations", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--min-lifetime", type=float, default=600)
    parser.add_argument("--max-lifetime", type=float, default=1200)
    parser.add_argument("--spread", type=float, default=None, help="first refreshes over this many s")
    parser.add_argument(
        "--rate", type=float, default=None, help="TOKENKEEPER_MAX_REFRESH_RATE (default: the setting's default)"
    )
    parser.add_argument("--memory-seconds", type=float, default=60)
    args = parser.parse_args()
    n = args.integrations
    # First refreshes spread so that the rate is about what the second round will keep up.
    spread = args.spread if args.spread is not None else n / 150
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        port = free_port()
        server = token_server(port, log_dir, args.min_lifetime, args.max_lifetime)
        token_url = f"http://127.0.0.1:{port}/token"
        try:
            small_worker, small_beat = memory_phase(args.baseline_integrations, token_url, args.memory_seconds)
            with own_redis() as url:
                client = redis.Redis.from_url(url, decode_responses=True)
                empty = int(client.info("memory")["used_memory"])
                key = generate_key()
                seeding = time.time()
                seed(url, key, token_url, n, first_due=time.time() + 30, spread=spread)
                seeded_in = time.time() - seeding
                per_integration = (int(client.info("memory")["used_memory"]) - empty) / n
                redis_pid = int(client.info("server")["process_id"])
                worker, beat = run_service(url, key, log_dir, args.rate)
                report(
                    args,
                    n,
                    client,
                    port,
                    worker,
                    beat,
                    server,
                    redis_pid,
                    seeded_in,
                    per_integration,
                    small_worker,
                    small_beat,
                )
        finally:
            server.stop()


def report(
    args, n, client, port, worker, beat, server, redis_pid, seeded_in, per_integration, small_worker, small_beat
) -> None:
    names = [f"b{i}" for i in range(n)]
    reader = Reader(client, names)
    peak_worker = peak_beat = 0.0
    try:
        time.sleep(25)  # let workers start before the clock runs
        start_stats = token_stats(port)
        cpu_start = {
            label: tree_cpu(pid)
            for label, pid in (
                ("worker", worker.pid),
                ("beat", beat.pid),
                ("redis", redis_pid),
                ("token server", server.pid),
            )
        }
        started = time.monotonic()
        deadline = started + args.minutes * 60
        next_rss = started
        while time.monotonic() < deadline:
            reader.look()
            if time.monotonic() >= next_rss:
                peak_worker = max(peak_worker, tree_rss(worker.pid))
                peak_beat = max(peak_beat, tree_rss(beat.pid))
                next_rss += 30
            time.sleep(0.1)  # the reader's sampling period
        elapsed = time.monotonic() - started
        end_stats = token_stats(port)
        cpu = {
            label: tree_cpu(pid) - cpu_start[label]
            for label, pid in (
                ("worker", worker.pid),
                ("beat", beat.pid),
                ("redis", redis_pid),
                ("token server", server.pid),
            )
        }
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hget(f"tokenkeeper:integration:{name}", "lateness")
        lateness = [float(value) for value in pipe.execute() if value]
        yielded = sum(int(count) for count in client.hvals("tokenkeeper:metrics:cap_yielded"))
        capacity = client.hgetall("tokenkeeper:beat:capacity")
    finally:
        beat.stop()
        worker.stop()
    refreshes = end_stats["requests"] - start_stats["requests"]
    print(f"integrations {n}, lifetimes {args.min_lifetime:g}-{args.max_lifetime:g} s, seeded in {seeded_in:.0f} s")
    print(f"ran {elapsed / 60:.1f} min: {refreshes} refreshes, {refreshes / elapsed:.1f} refreshes/s")
    print(
        f"reader: {reader.reads} sampled reads, {reader.expired} expired or not active, "
        f"worst headroom {reader.worst_headroom:.1f} s"
    )
    print(f"refreshes before half a lifetime (token server's count): {end_stats['early']}")
    cap = "default" if args.rate is None else f"{args.rate:g}/s"
    print(f"rate cap {cap}: {yielded} refreshes sent at their deadline past a booked cap")
    print(
        f"capacity at the end: need {capacity.get('need')}/s, doing {capacity.get('doing')}/s, "
        f"waiting {capacity.get('waiting')}"
    )
    print(
        f"lateness against plan, last refresh of {len(lateness)} integrations: p50 {median(lateness):.3f} s, "
        f"p90 {percentile(lateness, 90):.3f} s, p99 {percentile(lateness, 99):.3f} s, max {max(lateness):.3f} s"
    )
    total = sum(cpu.values())
    print(
        "CPU over the run: "
        + ", ".join(
            f"{label} {seconds:.0f} s ({seconds / elapsed * 100:.0f}% of a core)" for label, seconds in cpu.items()
        )
        + f"; total {total / elapsed:.2f} cores"
    )
    print(
        f"RSS worker (all processes): {args.baseline_integrations} integrations {small_worker:.0f} MiB, "
        f"{n}: {peak_worker:.0f} MiB, ratio {peak_worker / small_worker:.2f} (target <= 1.3)"
    )
    print(f"RSS beat: {small_beat:.0f} MiB vs {peak_beat:.0f} MiB, ratio {peak_beat / small_beat:.2f}")
    print(f"Redis: {per_integration:.0f} bytes per integration")


if __name__ == "__main__":
    main()
