"""What the operators' pages cost with many integrations: each GET against the raw Redis reads it needs, in the
same run, interleaved.

    .venv/bin/python -m bench.status_page --integrations 100000

Pages: the default list (100 rows of the index in name order), a filtered one (status and grant type), a name
prefix, a page deep in the list, one integration's page, and /metrics. The baseline of a list page is what any
client must read to show those rows: the index's range (and its counts), then each shown integration's hash with
HGETALL, pipelined. The second ratio sets the page against the very commands it sends, made raw: what Flask,
the row building and the template add.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import time
from collections.abc import Callable

import redis
from cryptography.fernet import Fernet

from bench.common import median, own_redis, seed
from callback_app import create_app
from config import load_settings
from workers.engine.overview import ROW_FIELDS
from workers.store import Store
from workers.store.index import Filters

P = "tokenkeeper:"
# Of the seeded integrations, every RETRYING-th is set retrying and every STOPPED-th needs_reauth (filtered pages).
RETRYING, STOPPED = 50, 1000


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def vary_statuses(raw: redis.Redis, count: int) -> None:
    """Some seeded integrations in other statuses (written directly: the index is built afterwards)."""
    pipe = raw.pipeline(transaction=False)
    for i in range(0, count, RETRYING):
        status = "needs_reauth" if i % STOPPED == 0 else "retrying"
        pipe.hset(f"{P}integration:b{i}", mapping={"status": status, "reason": "bench: HTTP 503"})
        pipe.hset(f"{P}token:b{i}", "status", status)
    pipe.execute()


def strip_index(raw: redis.Redis) -> None:
    """The store as a version without the index left it."""
    for key in raw.scan_iter(f"{P}index:*", count=1000):
        raw.delete(key)
    pipe = raw.pipeline(transaction=False)
    for name in raw.sscan_iter(f"{P}names", count=1000):
        pipe.hdel(f"{P}integration:".encode() + name, "index_cell")
    pipe.execute()


def list_reads(raw: redis.Redis, sources: list[str], low: bytes, high: bytes, after: bytes = b"") -> Callable[[], None]:
    """The least a list page must read: the counts, each source's range from the cursor, the shown rows' hashes."""

    def read() -> None:
        pipe = raw.pipeline(transaction=False)
        pipe.hgetall(f"{P}index:cells")
        for source in sources:
            pipe.zrangebylex(source, b"(" + after if after else low, high, 0, 100)
            pipe.zlexcount(source, low, high)
        replies = pipe.execute()
        names = list(heapq.merge(*replies[1::2]))[:100]
        pipe = raw.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(f"{P}integration:".encode() + name)
        pipe.execute()

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--integrations", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    key = Fernet.generate_key().decode()
    with own_redis() as url:
        started = time.perf_counter()
        seed(url, key, "https://idp.example/token", args.integrations, first_due=time.time() + 3600, spread=600)
        print(f"seeded {args.integrations} integrations in {time.perf_counter() - started:.0f} s")
        raw = redis.Redis.from_url(url)
        vary_statuses(raw, args.integrations)
        store = Store(redis.Redis.from_url(url))
        strip_index(raw)
        started = time.perf_counter()
        rebuilt = store.index.rebuild()
        print(
            f"index built from nothing (tokenkeeper reindex, as for a store from before it): "
            f"{time.perf_counter() - started:.1f} s, {rebuilt.filed} filed"
        )
        started = time.perf_counter()
        again = store.index.rebuild()
        print(f"reindex of a correct index: {time.perf_counter() - started:.1f} s, {again.filed} filed")
        index_keys = [f"{P}index:names", f"{P}index:cells", *raw.scan_iter(f"{P}index:cell:*")]
        index_bytes = sum(raw.memory_usage(key, samples=0) or 0 for key in index_keys)
        print(f"the index in Redis: {index_bytes / args.integrations:.0f} bytes per integration")
        settings = load_settings(
            {"TOKENKEEPER_REDIS_URL": url, "TOKENKEEPER_SECRET_KEY": key, "TOKENKEEPER_OPERATOR_PASSWORD": "bench"}
        )
        app = create_app(settings)
        client = app.test_client()
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:bench").decode()}
        names = f"{P}index:names"
        middle = f"b{args.integrations // 2}"

        def get(path: str) -> Callable[[], None]:
            def fetch() -> None:
                response = client.get(path, headers=auth)
                assert response.status_code == 200, (path, response.status_code)

            return fetch

        def same_reads(**query: str) -> Callable[[], None]:
            """The page's own read, alone: the store's page script (lua/page.lua)."""

            def read() -> None:
                filters = Filters(status=query.get("status"), grant=query.get("grant"))
                store.index.page(filters, prefix=query.get("q", ""), after=query.get("after", ""), fields=ROW_FIELDS)

            return read

        def integration_reads() -> None:
            pipe = raw.pipeline(transaction=False)
            pipe.hgetall(f"{P}integration:{middle}")
            pipe.lrange(f"{P}history:{middle}", 0, -1)
            pipe.hmget(f"{P}token:{middle}", ["token_type", "scope"])
            pipe.execute()

        def metrics_reads() -> None:
            pipe = raw.pipeline(transaction=False)
            for metric in ("refresh_outcomes", "refresh_duration", "refresh_lateness", "cap_yielded"):
                pipe.hgetall(f"{P}metrics:{metric}")
            pipe.hgetall(f"{P}beat:capacity")
            pipe.hgetall(f"{P}index:cells")
            pipe.execute()

        retrying_cell = f"{P}index:cell:retrying:client_credentials:"
        cases: list[tuple[str, Callable[[], None], Callable[[], None], Callable[[], None] | None]] = [
            ("GET /status", get("/status"), list_reads(raw, [names], b"-", b"+"), same_reads()),
            (
                "GET /status?status=retrying&grant=client_credentials",
                get("/status?status=retrying&grant=client_credentials"),
                list_reads(raw, [retrying_cell], b"-", b"+"),
                same_reads(status="retrying", grant="client_credentials"),
            ),
            ("GET /status?q=b4", get("/status?q=b4"), list_reads(raw, [names], b"[b4", b"(b4\xff"), same_reads(q="b4")),
            (
                f"GET /status?after={middle}",
                get(f"/status?after={middle}"),
                list_reads(raw, [names], b"-", b"+", middle.encode()),
                same_reads(after=middle),
            ),
            (f"GET /status/{middle}", get(f"/status/{middle}"), integration_reads, None),
            ("GET /metrics", get("/metrics"), metrics_reads, None),
        ]
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            # Interleaved, so every measurement sees the same machine load.
            for label, page, baseline, own in cases:
                samples.setdefault(label, []).append(timed(page))
                samples.setdefault(label + " raw", []).append(timed(baseline))
                if own is not None:
                    samples.setdefault(label + " own", []).append(timed(own))
        print(f"{args.integrations} integrations, median of {args.rounds} (ms; ratio to raw, then to its own reads)")
        print(f"{'page':56} {'page ms':>8} {'raw ms':>8} {'ratio':>6} {'own ms':>8} {'ratio':>6}")
        for label, _, _, own in cases:
            page_ms = median(samples[label]) * 1000
            raw_ms = median(samples[label + " raw"]) * 1000
            line = f"{label:56} {page_ms:8.2f} {raw_ms:8.2f} {page_ms / raw_ms:6.2f}"
            if own is not None:
                own_ms = median(samples[label + " own"]) * 1000
                line += f" {own_ms:8.2f} {page_ms / own_ms:6.2f}"
            print(line)


if __name__ == "__main__":
    main()
