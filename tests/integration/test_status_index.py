"""The operators' index (workers/store/index.py): kept by the same atomic writes as the integrations, paged and
filtered without reading what is not shown, rebuilt for a store from before it; and `tokenkeeper list`."""

from __future__ import annotations

import base64
import random
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis

from tests.support.index import assert_index_matches, expected_cells, filed_cells, stored, strip_index
from tests.support.processes import ROOT, CeleryProcess, wait_until
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime
from workers.store.index import Filters

pytestmark = pytest.mark.e2e

OPERATOR = ("ops", "correct-horse-battery")
INVALID_GRANT = Canned(
    status=400,
    body=b'{"error": "invalid_grant", "error_description": "token revoked"}',
    headers={"Content-Type": "application/json"},
)


def _code_spec(name: str, provider: str) -> dict[str, object]:
    return {"name": name, "provider": provider, "client_id": "app", "client_secret": "app-secret"}


def test_the_index_follows_every_create_status_change_update_and_delete(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """After each step of a mixed sequence (creates of several grants and providers, refreshes that fail
    and recover, an update that changes the provider, deletes, a name used again), the index files every
    integration in the cell its own record says, and nothing else; deleting all leaves no index key."""
    registry, refresher = Registry(runtime), Refresher(runtime)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("create alpha", lambda: registry.create(cc_spec(token_server, "alpha"))),
        ("create bravo", lambda: registry.create(cc_spec(token_server, "bravo"))),
        ("create charlie", lambda: registry.create(rt_spec(token_server, "charlie"))),
        ("create delta", lambda: registry.create(rt_spec(token_server, "delta"))),
        ("create echo", lambda: registry.create(_code_spec("echo", "dropbox"))),
        ("create foxtrot", lambda: registry.create(_code_spec("foxtrot", "slack"))),
        ("charlie fails", lambda: (token_server.queue(Canned(status=503)), refresher.refresh("charlie"))),
        ("delta is refused", lambda: (token_server.queue(INVALID_GRANT), refresher.refresh("delta"))),
        ("charlie recovers", lambda: refresher.refresh("charlie")),
        ("echo moves to box", lambda: registry.update("echo", {"provider": "box"})),
        (
            "delta gets a new token",
            lambda: registry.update("delta", {"refresh_token": token_server.new_refresh_token()}),
        ),
        ("alpha refreshes", lambda: refresher.refresh("alpha")),
        ("delete bravo", lambda: registry.delete("bravo")),
        ("delete charlie", lambda: registry.delete("charlie")),
        ("bravo again, another grant", lambda: registry.create(rt_spec(token_server, "bravo"))),
        ("bravo is refused", lambda: (token_server.queue(INVALID_GRANT), refresher.refresh("bravo"))),
    ]
    for step, action in steps:
        action()
        assert filed_cells(redis_client) == expected_cells(redis_client), step
    assert assert_index_matches(redis_client) == {
        "alpha": "active:client_credentials:",
        "bravo": "needs_reauth:refresh_token:",
        "delta": "active:refresh_token:",
        "echo": "pending_authorization:authorization_code:box",
        "foxtrot": "pending_authorization:authorization_code:slack",
    }
    assert runtime.store.index.counts("status") == {"active": 2, "needs_reauth": 1, "pending_authorization": 2}
    for name in ("alpha", "bravo", "delta", "echo", "foxtrot"):
        registry.delete(name)
    assert list(redis_client.scan_iter("tokenkeeper:index*")) == []


def _brute(records: dict[str, tuple[str, str, str]], filters: Filters, prefix: str) -> list[str]:
    return sorted(
        (
            name
            for name, (status, grant, provider) in records.items()
            if name.startswith(prefix)
            and filters.status in (None, status)
            and filters.grant in (None, grant)
            and filters.provider in (None, provider)
        ),
        key=str.encode,
    )


def test_pages_walk_every_match_forward_and_back(runtime: Runtime) -> None:
    """For filters alone and combined, with and without a name prefix, at several page sizes: walking
    forward from each page's last name gives exactly the matching names in byte order, with the right
    counts and positions, and walking back from each page's first name gives the pages before it."""
    rnd = random.Random(15)  # noqa: S311 -- names for a test, the same every run
    records: dict[str, tuple[str, str, str]] = {}
    while len(records) < 400:
        name = rnd.choice("abAB") + "".join(rnd.choice("ab_-9Z") for _ in range(rnd.randint(0, 4)))
        records.setdefault(
            name,
            (
                rnd.choice(["active", "retrying", "needs_reauth", "pending_authorization"]),
                rnd.choice(["client_credentials", "refresh_token", "authorization_code"]),
                rnd.choice(["", "google", "dropbox"]),
            ),
        )
    runtime.store.create_many([stored(name, *cell) for name, cell in records.items()])
    index = runtime.store.index
    queries = [
        Filters(),
        Filters(status="active"),
        Filters(grant="refresh_token", provider=""),
        Filters(status="retrying", grant="authorization_code", provider="google"),
        Filters(provider="dropbox"),
        Filters(status="active", provider="nowhere"),
    ]
    for filters in queries:
        for prefix in ("", "a", "B", "a_", "b-9", "zz"):
            expected = _brute(records, filters, prefix)
            for limit in (1, 7, 100):
                pages: list[tuple[str, ...]] = []
                after = ""
                while True:
                    page = index.page(filters, prefix=prefix, after=after, limit=limit, fields=("status",))
                    assert (page.matching, page.position) == (len(expected), sum(map(len, pages)))
                    assert [row["status"] for row in page.rows] == [records[name][0] for name in page.names]
                    pages.append(page.names)
                    if not page.more_after:
                        break
                    after = page.names[-1]
                assert [name for names in pages for name in names] == expected, (filters, prefix, limit)
                for number in range(len(pages) - 1, 0, -1):
                    back = index.page(filters, prefix=prefix, before=pages[number][0], limit=limit)
                    assert back.names == pages[number - 1], (filters, prefix, limit, number)
                    assert back.position == sum(map(len, pages[: number - 1]))
    assert index.counts("grant") == {
        grant: sum(1 for _, g, _ in records.values() if g == grant)
        for grant in ("client_credentials", "refresh_token", "authorization_code")
    }


def test_a_page_of_the_status_page_reads_only_the_rows_it_shows(
    environ: dict[str, str], settings, runtime: Runtime, redis_client: redis.Redis, make_client
) -> None:
    """With 1,500 integrations, GET /status, a filtered page and /metrics each read one hash of sizes and
    the shown integrations' fields (100 HMGET), never every integration: no SMEMBERS, SCAN, HGETALL of a
    record, or a read of a token hash."""
    from config import load_settings

    runtime.store.create_many(
        [stored(f"svc{i:04d}", "retrying" if i % 10 == 0 else "active", "client_credentials") for i in range(1500)]
    )
    client = make_client(
        load_settings(
            {**environ, "TOKENKEEPER_OPERATOR_USER": OPERATOR[0], "TOKENKEEPER_OPERATOR_PASSWORD": OPERATOR[1]}
        )
    )
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(OPERATOR).encode()).decode()}
    for path, rows in (("/status", 100), ("/status?status=retrying&q=svc1", 50), ("/metrics", 0)):
        redis_client.config_resetstat()
        response = client.get(path, headers=auth)
        assert response.status_code == 200, response.get_data(as_text=True)
        calls = {
            name.removeprefix("cmdstat_"): stat["calls"] for name, stat in redis_client.info("commandstats").items()
        }
        calls.pop("config|resetstat", None)
        assert calls.get("hmget", 0) == rows, (path, calls)
        assert not {"smembers", "sscan", "scan", "keys", "hget", "lrange"} & calls.keys(), (path, calls)
        # The one HGETALL of a list page is the cells' sizes; /metrics adds its eight small hashes (refresh outcomes,
        # duration, lateness, webhook deliveries, last refresh, lifetimes, capacity, rate-cap yields): none per
        # integration.
        assert calls.get("hgetall", 0) <= (1 if rows else 9), (path, calls)
        if rows:
            assert response.get_data(as_text=True).count("<tr data-name=") == rows


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_store_from_before_the_index_is_filed_by_reindex(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis, process_env: dict[str, str]
) -> None:
    """`tokenkeeper reindex` files a store that has no index, and repairs hand edits (a status set
    directly, a record deleted past the scripts); run again, it changes nothing."""
    registry = Registry(runtime)
    for name in ("one", "two", "three"):
        registry.create(cc_spec(token_server, name))
    registry.create(_code_spec("four", "dropbox"))
    strip_index(redis_client)
    assert not runtime.store.index.complete()
    first = _cli(process_env, "reindex")
    assert first.returncode == 0, first.stderr
    assert '"filed": 4' in first.stdout and '"removed": 0' in first.stdout
    assert assert_index_matches(redis_client)["four"] == "pending_authorization:authorization_code:dropbox"
    # Hands: a status written past the scripts, and a record removed without its index entries.
    redis_client.hset("tokenkeeper:integration:one", "status", "needs_reauth")
    redis_client.delete("tokenkeeper:integration:two")
    redis_client.srem("tokenkeeper:names", "two")
    second = _cli(process_env, "reindex")
    assert '"filed": 1' in second.stdout and '"removed": 1' in second.stdout, second.stdout
    assert assert_index_matches(redis_client)["one"] == "needs_reauth:client_credentials:"
    third = _cli(process_env, "reindex")
    assert '"filed": 0' in third.stdout and '"removed": 0' in third.stdout and '"recounted": 0' in third.stdout


def test_beat_files_a_store_from_before_the_index_when_it_starts(
    runtime: Runtime,
    token_server: TokenServer,
    redis_client: redis.Redis,
    start_processes: Callable[..., CeleryProcess],
) -> None:
    """Beat finds the index short at its start and builds it in the background: the migration happens
    without anyone running a command."""
    registry = Registry(runtime)
    for i in range(30):
        registry.create(cc_spec(token_server, f"old{i}"))
    strip_index(redis_client)
    beat = start_processes("beat")
    wait_until(runtime.store.index.complete, 30, "beat to build the index")
    assert len(assert_index_matches(redis_client)) == 30
    wait_until(lambda: "index is built: 30 filed" in beat.output(), 10, "beat to log the build")


def test_tokenkeeper_list_pages_and_filters_like_the_status_page(
    runtime: Runtime, token_server: TokenServer, process_env: dict[str, str]
) -> None:
    """`tokenkeeper list` takes --prefix, --status, --grant, --provider, --limit and --after, says on
    stderr how to get the next page, --all prints every page, and a bad filter is one line naming it."""
    registry, refresher = Registry(runtime), Refresher(runtime)
    for name in ("svc_a", "svc_b", "svc_c", "other"):
        registry.create(cc_spec(token_server, name))
    registry.create(_code_spec("team_box", "box"))
    token_server.queue(Canned(status=503))
    refresher.refresh("svc_b")

    def names(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert result.returncode == 0, result.stderr
        return [line.split()[0] for line in result.stdout.splitlines()[1:]]

    first = _cli(process_env, "list", "--prefix", "svc_", "--limit", "2")
    assert names(first) == ["svc_a", "svc_b"]
    assert first.stderr.strip() == "1 more: add --after svc_b (or --all)"
    assert names(_cli(process_env, "list", "--prefix", "svc_", "--limit", "2", "--after", "svc_b")) == ["svc_c"]
    assert names(_cli(process_env, "list", "--limit", "1", "--all")) == ["other", "svc_a", "svc_b", "svc_c", "team_box"]
    assert names(_cli(process_env, "list", "--status", "retrying")) == ["svc_b"]
    assert names(_cli(process_env, "list", "--grant", "client_credentials", "--status", "active")) == [
        "other",
        "svc_a",
        "svc_c",
    ]
    assert names(_cli(process_env, "list", "--provider", "box")) == ["team_box"]
    assert names(_cli(process_env, "list", "--provider", "none", "--prefix", "o")) == ["other"]
    listed = _cli(process_env, "list", "--status", "retrying")
    assert "HTTP 503" in listed.stdout and listed.stderr == ""
    bad = _cli(process_env, "list", "--status", "broken", "--prefix", "a b")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "status 'broken': use one of" in bad.stderr and "prefix 'a b'" in bad.stderr
