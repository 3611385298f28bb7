"""Redis memory per integration, up to a million: seeded straight into a Redis started as standalone starts it.

    python -m bench.redis_memory --integrations 1000000

Seeds client-credentials integrations as creation stores them (integration hash with its sealed
secrets, consumer hash, schedule entry, name, the operators' index, the lifetimes tally; with
``--managed``, as `tokenkeeper apply` stores them, with the digests of what was given) into a fresh
redis-server with the configuration tokenkeeper gives its own (workers.ops.redis_server.start_server:
compact hashes), and prints ``used_memory`` per integration at checkpoints, and the total.
"""

from __future__ import annotations

import argparse
import time

import redis

from bench.common import own_redis, seed
from workers.crypto.secretbox import generate_key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--integrations", type=int, default=1_000_000)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument(
        "--managed", action="store_true", help="as `tokenkeeper apply` stores them: kept by a file, with their digests"
    )
    args = parser.parse_args()
    key = generate_key()
    with own_redis() as url:
        client = redis.Redis.from_url(url)
        empty = int(client.info("memory")["used_memory"])
        done = 0
        started = time.monotonic()
        while done < args.integrations:
            count = min(args.step, args.integrations - done)
            # The token URL is never called: nothing runs but Redis.
            seed(
                url,
                key,
                "https://idp.example.com/oauth2/token",
                count,
                first_due=time.time() + 3600,
                spread=3600,
                prefix=f"s{done}-",
                managed=args.managed,
            )
            done += count
            memory = client.info("memory")
            used = int(memory["used_memory"]) - empty
            print(
                f"{done:>9} integrations: {used / done:6.0f} bytes each, used_memory {used / 2**20:7.1f} MiB, "
                f"rss {int(memory['used_memory_rss']) / 2**20:7.1f} MiB ({time.monotonic() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
