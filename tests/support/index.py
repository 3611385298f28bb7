"""The operators' index as Redis holds it, and as the integrations' own hashes say it should be."""

from __future__ import annotations

import json
from typing import Any

import redis

from workers.store import NewIntegration

P = "tokenkeeper:"


def expected_cells(client: redis.Redis) -> dict[str, str]:
    """name -> ``status:grant:provider`` of every stored integration, read from its own hash and spec."""
    cells = {}
    for name in client.smembers(P + "names"):
        raw = client.hgetall(f"{P}integration:{name}")
        provider = json.loads(raw["spec"]).get("provider") or ""
        cells[name] = f"{raw['status']}:{raw['grant_type']}:{provider}"
    return cells


def filed_cells(client: redis.Redis) -> dict[str, str]:
    """name -> cell as the index files it; fails if the index disagrees with itself anywhere."""
    sizes = client.hgetall(P + "index:cells")
    filed: dict[str, str] = {}
    for cell, size in sizes.items():
        members = client.zrange(f"{P}index:cell:{cell}", 0, -1, withscores=True)
        assert len(members) == int(size) > 0, (cell, size, members)
        for name, score in members:
            assert score == 0 and name not in filed, (name, cell, filed.get(name))
            filed[name] = cell
    # No cell outside the sizes, and the names set holds exactly the filed names.
    assert set(client.scan_iter(P + "index:cell:*")) == {f"{P}index:cell:{cell}" for cell in sizes}
    assert set(client.zrange(P + "index:names", 0, -1)) == set(filed)
    for name, cell in filed.items():
        assert client.hget(f"{P}integration:{name}", "index_cell") == cell, name
    return filed


def assert_index_matches(client: redis.Redis) -> dict[str, str]:
    expected = expected_cells(client)
    assert filed_cells(client) == expected
    return expected


def strip_index(client: redis.Redis) -> None:
    """Make the store look like one written before the index existed."""
    for key in client.scan_iter(P + "index:*"):
        client.delete(key)
    for name in client.smembers(P + "names"):
        client.hdel(f"{P}integration:{name}", "index_cell")


def stored(name: str, status: str, grant: str, provider: str = "", **fields: Any) -> NewIntegration:
    """An integration as creation stores it (without asking a provider): for tests about listing, not refreshing."""
    spec = {"name": name, "grant_type": grant, "client_id": "id", **({"provider": provider} if provider else {})}
    record = {
        "grant_type": grant,
        "spec": spec,
        "secrets": "sealed-elsewhere",
        "status": status,
        "reason": f"{status} for the test",
        "status_at": 1.0,
        "created_at": 1.0,
        "attempts": 0,
        **fields,
    }
    return NewIntegration(name, record, {"status": status}, {"at": 1.0, "status": status, "reason": "created"}, None)
