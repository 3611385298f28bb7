"""Creation: latency of one create (producer -> first token stored) and bulk creation through the CLI.

    python -m bench.create --latency 300 --bulk 100000 [--live 2000] [--refreshes 20000]

Latency: one create_integration at a time through the broker to a prefork worker
(2 processes), timed from send until the result says the token is stored.
Bulk: ``tokenkeeper create specs.jsonl`` with --bulk specs, its progress bar on
stderr, timed end to end, while beat and the same worker keep --live integrations
on 60-120 s tokens fresh (their refreshes' lateness and expired reads sampled).
Then the refresh pipeline of bench.refresh_throughput on --refreshes integrations,
and the ratio of the bulk's rate to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from bench.common import (
    LOCAL_NETWORKS,
    ROOT,
    celery,
    free_port,
    median,
    own_redis,
    percentile,
    seed,
    token_server,
    worker,
)
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


class LiveWatch:
    """Samples the live integrations while the bulk runs: each refresh's lateness, and expired tokens."""

    def __init__(self, client: redis.Redis, names: list[str]) -> None:
        self.client, self.names = client, names
        self.seen: dict[str, bytes | None] = {}
        self.lateness: list[float] = []
        self.reads = self.expired = 0

    def look(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name in self.names:
            pipe.hmget(f"tokenkeeper:integration:{name}", "refreshed_at", "lateness")
            pipe.hmget(f"tokenkeeper:token:{name}", "expires_at", "status")
        replies = pipe.execute()
        now = time.time()
        for name, (refreshed_at, lateness), (expires_at, status) in zip(
            self.names, replies[::2], replies[1::2], strict=True
        ):
            self.reads += 1
            if status != b"active" or not expires_at or float(expires_at) <= now:
                self.expired += 1
            # The first look notes where each stands (seeded ones: never refreshed); any change after is a refresh.
            if name not in self.seen:
                self.seen[name] = refreshed_at
            elif refreshed_at != self.seen[name]:
                if lateness:
                    self.lateness.append(float(lateness))
                self.seen[name] = refreshed_at


def refresh_rate(count: int) -> tuple[float, float]:
    """The refresh pipeline's rate on the same machine (bench.refresh_throughput), whole run and sustained
    (between 10 % and 90 % of its refreshes: a short run's start and tail weigh on the whole-run rate)."""
    from bench.refresh_throughput import pipeline

    with tempfile.TemporaryDirectory() as tmp, own_redis() as url:
        log_dir = Path(tmp)
        port = free_port()
        server = token_server(port, log_dir)
        try:
            rate, sustained, _ = pipeline(
                url, f"http://127.0.0.1:{port}/token", server, port, count, 2, "prefork", log_dir
            )
        finally:
            server.stop()
    return rate, sustained


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=300)
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument(
        "--refreshes", type=int, default=20000, help="integrations the refresh pipeline is measured on (0: skip)"
    )
    parser.add_argument(
        "--live", type=int, default=2000, help="integrations on 60-120 s tokens kept fresh during the bulk"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, own_redis() as url:
        log_dir = Path(tmp)
        port = free_port()
        # The bulk's provider: hour-long tokens, so the bulk adds creations and no refreshes.
        server = token_server(port, log_dir, low=3600, high=3600)
        token_url = f"http://127.0.0.1:{port}/token"
        live_port = free_port()
        (log_dir / "live").mkdir()
        live_server = token_server(live_port, log_dir / "live", low=60, high=120)
        env = {
            **os.environ,
            **LOCAL_NETWORKS,
            "TOKENKEEPER_REDIS_URL": url,
            "TOKENKEEPER_SECRET_KEY": generate_key(),
            "TOKENKEEPER_DATA_DIR": tmp,
        }
        seed(
            url,
            env["TOKENKEEPER_SECRET_KEY"],
            f"http://127.0.0.1:{live_port}/token",
            args.live,
            first_due=time.time() + 20,
            spread=60,
            prefix="live",
        )
        live = [f"live{i}" for i in range(args.live)]
        service = worker(env, log_dir)
        beat = celery("beat", env, log_dir, "--loglevel", "WARNING", "-s", str(log_dir / "beat-schedule"))
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
            watch = LiveWatch(redis.Redis.from_url(url), live)
            watch.look()
            start = time.perf_counter()
            bulk = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "create", str(specs)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # Read by a thread: a full pipe would stall the CLI.
            output: dict[str, str] = {}
            reader = threading.Thread(
                target=lambda: output.update(zip(("out", "err"), bulk.communicate(), strict=True))
            )
            reader.start()
            while bulk.poll() is None:
                watch.look()
                time.sleep(0.5)
            reader.join()
            elapsed = time.perf_counter() - start
            result = subprocess.CompletedProcess(bulk.args, bulk.returncode, output["out"], output["err"])
            summary = json.loads(result.stdout or "{}")
            print(
                f"bulk: `tokenkeeper create specs.jsonl` with {args.bulk} specs: exit {result.returncode}, "
                f"created {summary.get('created')}, failed {summary.get('failed')}, {elapsed:.0f} s, "
                f"{args.bulk / elapsed:.0f} integrations/s"
            )
            print("progress bar, last lines:", *result.stderr.strip().splitlines()[-2:], sep="\n  ")
            late = watch.lateness
            print(
                f"meanwhile {args.live} live integrations on 60-120 s tokens: {len(late)} refreshes, lateness p50 "
                f"{percentile(late, 50):.3f} s, p99 {percentile(late, 99):.3f} s, max {max(late, default=0):.3f} s; "
                f"{watch.expired} of {watch.reads} sampled reads expired or not active"
            )
        finally:
            beat.stop()
            service.stop()
            server.stop()
            live_server.stop()
    if args.refreshes:
        rate, sustained = refresh_rate(args.refreshes)
        print(
            f"refresh pipeline, same machine, {args.refreshes} integrations: {rate:.0f} refreshes/s "
            f"(sustained {sustained:.0f}); bulk creation / refresh: {args.bulk / elapsed / rate:.2f}, "
            f"against the sustained rate {args.bulk / elapsed / sustained:.2f} (target >= 0.8)"
        )


if __name__ == "__main__":
    main()
