"""Creation: latency of one create (producer → first token stored) and bulk creation through the CLI.

    python -m bench.create --latency 300 --bulk 100000

Latency: one create_integration at a time through the broker to a prefork worker
(2 processes), timed from send until the result says the token is stored.
Bulk: ``tokenkeeper create specs.jsonl`` with --bulk specs, its progress bar on
stderr, timed end to end; then the refresh pipeline of bench.refresh_throughput on
--refreshes integrations, and the ratio of the two rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import LOCAL_NETWORKS, ROOT, free_port, median, own_redis, percentile, token_server, worker
from config import load_settings
from workers.celery_app import create_celery
from workers.crypto.secretbox import generate_key
from workers.producer import send


def spec(name: str, token_url: str) -> dict[str, str]:
    return {
        "name": name,
        "grant_type": "client_credentials",
        "client_id": name,
        "client_secret": "s",
        "token_url": token_url,
    }


def refresh_rate(count: int) -> float:
    """The refresh pipeline's rate on the same machine (bench.refresh_throughput), for the bulk's ratio."""
    from bench.refresh_throughput import pipeline

    with tempfile.TemporaryDirectory() as tmp, own_redis() as url:
        log_dir = Path(tmp)
        port = free_port()
        server = token_server(port, log_dir)
        try:
            rate, _ = pipeline(url, f"http://127.0.0.1:{port}/token", server, port, count, 2, "prefork", log_dir)
        finally:
            server.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=300)
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument(
        "--refreshes", type=int, default=8000, help="integrations the refresh pipeline is measured on (0: skip)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, own_redis() as url:
        log_dir = Path(tmp)
        port = free_port()
        server = token_server(port, log_dir)
        token_url = f"http://127.0.0.1:{port}/token"
        env = {
            **os.environ,
            **LOCAL_NETWORKS,
            "TOKENKEEPER_REDIS_URL": url,
            "TOKENKEEPER_SECRET_KEY": generate_key(),
            "TOKENKEEPER_DATA_DIR": tmp,
        }
        service = worker(env, log_dir)
        app = create_celery(load_settings({k: v for k, v in env.items() if k.startswith("TOKENKEEPER_")}))
        try:
            send(app, "tokenkeeper.create_integration", spec("warmup", token_url)).get(timeout=60)
            samples = []
            for i in range(args.latency):
                start = time.perf_counter()
                send(app, "tokenkeeper.create_integration", spec(f"l{i}", token_url)).get(timeout=60)
                samples.append((time.perf_counter() - start) * 1000)
            print(
                f"create -> first token stored, {args.latency} sequential creates: p50 {median(samples):.1f} ms, "
                f"p99 {percentile(samples, 99):.1f} ms"
            )
            specs = log_dir / "specs.jsonl"
            with specs.open("w") as handle:
                for i in range(args.bulk):
                    handle.write(json.dumps(spec(f"k{i}", token_url)) + "\n")
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "workers.cli", "create", str(specs)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            elapsed = time.perf_counter() - start
            summary = json.loads(result.stdout or "{}")
            print(
                f"bulk: `tokenkeeper create specs.jsonl` with {args.bulk} specs: exit {result.returncode}, "
                f"created {summary.get('created')}, failed {summary.get('failed')}, {elapsed:.0f} s, "
                f"{args.bulk / elapsed:.0f} integrations/s"
            )
            print("progress bar, last lines:", *result.stderr.strip().splitlines()[-2:], sep="\n  ")
        finally:
            service.stop()
            server.stop()
    if args.refreshes:
        rate = refresh_rate(args.refreshes)
        print(
            f"refresh pipeline, same machine, {args.refreshes} integrations: {rate:.0f} refreshes/s; "
            f"bulk creation / refresh: {args.bulk / elapsed / rate:.2f} (target >= 0.8)"
        )


if __name__ == "__main__":
    main()
