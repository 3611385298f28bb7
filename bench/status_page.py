"""What the operators' pages cost with many integrations: GET /status and GET /metrics against the raw
Redis reads they cannot avoid (every integration's two hashes), measured in the same run.

    .venv/bin/python -m bench.status_page --integrations 10000
"""

from __future__ import annotations

import argparse
import base64
import time

import redis
from cryptography.fernet import Fernet

from bench.common import median, own_redis, seed
from callback_app import create_app
from config import load_settings


def timed(action, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    key = Fernet.generate_key().decode()
    with own_redis() as url:
        seed(url, key, "https://idp.example/token", args.integrations, first_due=time.time() + 3600, spread=600)
        settings = load_settings(
            {"TOKENKEEPER_REDIS_URL": url, "TOKENKEEPER_SECRET_KEY": key, "TOKENKEEPER_OPERATOR_PASSWORD": "bench"}
        )
        client = create_app(settings).test_client()
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:bench").decode()}
        raw = redis.Redis.from_url(url)

        def raw_reads() -> None:
            names = raw.smembers("tokenkeeper:names")
            pipe = raw.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(b"tokenkeeper:integration:" + name)
                pipe.hgetall(b"tokenkeeper:token:" + name)
            pipe.execute()

        def status_page() -> None:
            assert client.get("/status", headers=auth).status_code == 200

        def metrics() -> None:
            assert client.get("/metrics", headers=auth).status_code == 200

        results = {}
        for _ in range(args.rounds):
            # Interleaved so all three see the same machine load.
            for label, action in (("raw", raw_reads), ("status", status_page), ("metrics", metrics)):
                results.setdefault(label, []).extend(timed(action, 1))
        base = median(results["raw"])
        print(f"{args.integrations} integrations, median of {args.rounds}")
        print(f"raw reads (SMEMBERS + 2 HGETALL each, pipelined)  {base * 1000:8.1f} ms")
        print(
            f"GET /status (first 500 rows rendered)              {median(results['status']) * 1000:8.1f} ms"
            f"   ratio {median(results['status']) / base:.2f}"
        )
        print(
            f"GET /metrics                                       {median(results['metrics']) * 1000:8.1f} ms"
            f"   ratio {median(results['metrics']) / base:.2f}"
        )


if __name__ == "__main__":
    main()
