"""Read path: the consumer helper and the template renderer against raw redis-py HGETALL.

    python bench/read_path.py [--reads 20000]

Prints p50/p99 in microseconds and the ratios against raw ``HGETALL`` of the same
key, measured in the same run against the same redis-server, interleaved so both
see the same machine load; and counts Redis round trips of one template render.
"""

from __future__ import annotations

import argparse
import time

import redis

from bench.common import median, own_redis, percentile
from workers.consumer import TokenReader
from workers.templates import render

TEMPLATE = (
    "Authorization: {{ $.integrations.alpha.token_type }} {{ $.integrations.alpha.access_token }} "
    'X-Other: {{ $.integrations["beta-2"].access_token }}'
)


class CountingConnection(redis.Connection):
    """Counts writes to the socket: one per round trip, however many commands each carries."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


def timed(call, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=20000)
    args = parser.parse_args()
    with own_redis() as url:
        client = redis.Redis.from_url(url)
        fields = {
            "access_token": "at-" + "x" * 40,
            "token_type": "Bearer",
            "expires_at": str(int(time.time()) + 3600),
            "scope": "read write",
            "status": "active",
            "updated_at": str(int(time.time())),
        }
        for name in ("alpha", "beta-2"):
            client.hset(f"tokenkeeper:token:{name}", mapping=fields)
        reader = TokenReader(client)
        raw, ours, rendered = [], [], []
        # Interleaved rounds: the same load for baseline and subject.
        for _ in range(args.reads // 1000):
            raw += timed(lambda: client.hgetall("tokenkeeper:token:alpha"), 1000)
            ours += timed(lambda: reader.read("alpha"), 1000)
            rendered += timed(lambda: render(TEMPLATE, reader), 1000)
        counting = redis.Redis.from_url(url, connection_class=CountingConnection)
        counting.ping()
        CountingConnection.sends = 0
        render(TEMPLATE, TokenReader(counting))

        print(f"redis-py {redis.__version__}, parser: {'hiredis' if redis.utils.HIREDIS_AVAILABLE else 'python'}")
        print(f"raw HGETALL          p50 {median(raw):7.1f} us   p99 {percentile(raw, 99):7.1f} us")
        print(
            f"TokenReader.read     p50 {median(ours):7.1f} us   p99 {percentile(ours, 99):7.1f} us   "
            f"ratio p50 {median(ours) / median(raw):.2f} (target <= 1.25)"
        )
        print(
            f"render (3 placeholders, 2 integrations) p50 {median(rendered):7.1f} us   "
            f"p99 {percentile(rendered, 99):7.1f} us   "
            f"ratio p50 {median(rendered) / median(raw):.2f} (target <= 1.5)"
        )
        print(f"round trips per render: {CountingConnection.sends} (target 1)")


if __name__ == "__main__":
    main()
