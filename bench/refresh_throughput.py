"""Refresh throughput: the whole pipeline against a bare requests loop, same number of processes.

    python -m bench.refresh_throughput [--integrations 3000] [--processes 2] [--pool prefork]

Baseline: P processes, each a keep-alive ``requests.Session`` POSTing the same
client-credentials request to the same local token server as fast as it can.
Pipeline: N integrations all due now; beat's tick claims them, the broker
carries them, P worker processes refresh them (lock, token request, versioned
Lua write, unlock). Both rates are measured in this run; the ratio is printed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import redis
import requests

from bench.common import (
    LOCAL_NETWORKS,
    celery,
    free_port,
    own_redis,
    seed,
    token_server,
    token_stats,
    wait_for,
    worker,
)
from workers.crypto.secretbox import generate_key
from workers.oauth.token_client import basic_authorization


def _hammer(url: str, seconds: float, counter) -> None:
    session = requests.Session()
    headers = {"Authorization": basic_authorization("bench", "s"), "Accept": "application/json"}
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        session.post(url, data={"grant_type": "client_credentials"}, headers=headers, timeout=10).json()
        done += 1
    with counter.get_lock():
        counter.value += done


def baseline(url: str, processes: int, seconds: float) -> float:
    counter = multiprocessing.Value("i", 0)
    workers = [multiprocessing.Process(target=_hammer, args=(url, seconds, counter)) for _ in range(processes)]
    start = time.monotonic()
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    return counter.value / (time.monotonic() - start)


def pipeline(redis_url: str, url: str, port: int, count: int, processes: int, pool: str, log_dir: Path) -> float:
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
        try:
            # Timed from the first refresh to the last: beat's own start-up is not the pipeline.
            wait_for(lambda: token_stats(port)["requests"] > before, 60, "the first refresh", 0.01)
            start, first = time.monotonic(), token_stats(port)["requests"]
            wait_for(lambda: token_stats(port)["requests"] - before >= count, 600, "every refresh", 0.05)
            elapsed = time.monotonic() - start
        finally:
            beat.stop()
    finally:
        service.stop()
    return (before + count - first) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--integrations", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--baseline-seconds", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, own_redis() as redis_url:
        log_dir = Path(tmp)
        port = free_port()
        server = token_server(port, log_dir)
        url = f"http://127.0.0.1:{port}/token"
        try:
            base = baseline(url, args.processes, args.baseline_seconds)
            ours = pipeline(redis_url, url, port, args.integrations, args.processes, args.pool, log_dir)
        finally:
            server.stop()
    print(f"bare requests.Session loop, {args.processes} processes: {base:7.1f} POST/s")
    print(f"full pipeline, {args.pool} x{args.processes}, {args.integrations} integrations: {ours:7.1f} refreshes/s")
    print(f"ratio {ours / base:.2f} (target >= 0.6)")


if __name__ == "__main__":
    main()
