"""`tokenkeeper plan` / `apply`: a file of 50 integrations kept in step, with a real worker and token server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_cli import cli
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.e2e

SECRET = "client-secret"


def spec(server: TokenServer, name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "grant_type": "client_credentials",
        "client_id": "client-id",
        "client_secret": {"env": "SVC_SECRET"},
        "token_url": server.url,
        **extra,
    }


def write(path: Path, integrations: list[dict[str, object]], project: str = "acme") -> None:
    path.write_text(yaml.safe_dump({"project": project, "integrations": integrations}))


def test_a_file_of_fifty_is_planned_applied_and_kept_in_step(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str], redis_client: Any, tmp_path: Path
) -> None:
    start_processes("worker")
    token_server.lifetime = 3600.0
    env = {**process_env, "SVC_SECRET": SECRET}
    refresh_token = token_server.new_refresh_token()
    (tmp_path / "rt.txt").write_text(refresh_token + "\n")
    rotating = {
        "name": "user",
        "grant_type": "refresh_token",
        "client_id": "client-id",
        "client_secret": {"env": "SVC_SECRET"},
        "refresh_url": token_server.url,
        "refresh_token": {"file": "rt.txt"},
    }
    file = tmp_path / "integrations.yaml"
    specs = [spec(token_server, f"svc-{i:02d}") for i in range(49)] + [rotating]
    write(file, specs)
    # Made by hand, outside the file: never the file's to delete.
    made_by_hand = json.dumps({**spec(token_server, "by-hand"), "client_secret": SECRET})
    assert cli(env, "create", "-", stdin=made_by_hand).returncode == 0

    planned = cli(env, "plan", str(file))
    assert planned.returncode == 2, planned.stderr
    assert "Plan: 50 to create, 0 to update, 0 to delete, 0 unchanged." in planned.stdout
    assert "+ svc-00" in planned.stdout and "+ user" in planned.stdout

    applied = cli(env, "apply", "--yes", str(file))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply: 50 created, 0 updated, 0 deleted, 0 failed, 0 unchanged." in applied.stdout
    assert redis_client.hget("tokenkeeper:token:svc-33", "status") == "active"
    assert json.loads(redis_client.hget("tokenkeeper:integration:user", "spec"))["managed_by"] == "acme"

    # The provider rotates the refresh token: the file's (the one given) still counts as unchanged.
    assert cli(env, "refresh", "user").returncode == 0
    assert refresh_token in token_server.spent_refresh
    requests = len(token_server.grants)
    again = cli(env, "apply", "--yes", str(file))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Plan: 0 to create, 0 to update, 0 to delete, 50 unchanged." in again.stdout
    assert len(token_server.grants) == requests, "a second apply of the same file asked the provider"
    assert cli(env, "plan", str(file)).returncode == 0

    # Change one field, one secret (to one the provider refuses), drop one, add one.
    specs[1] = spec(token_server, "svc-01", scopes="read")
    specs[2] = {**spec(token_server, "svc-02"), "client_secret": {"env": "WRONG_SECRET"}}
    del specs[48]
    specs.append(spec(token_server, "svc-50"))
    write(file, specs)
    env["WRONG_SECRET"] = "not-the-secret"
    before = redis_client.hgetall("tokenkeeper:token:svc-02")

    planned = cli(env, "plan", str(file))
    assert planned.returncode == 2
    assert "~ svc-01  update: scopes" in planned.stdout
    assert "~ svc-02  update: client_secret (secret, changed)" in planned.stdout
    assert "svc-48" not in planned.stdout  # not without --prune
    pruned = cli(env, "plan", "--prune", str(file))
    assert "- svc-48  delete" in pruned.stdout and "by-hand" not in pruned.stdout
    assert "Plan: 1 to create, 2 to update, 1 to delete, 47 unchanged." in pruned.stdout

    applied = cli(env, "apply", "--prune", "--yes", str(file))
    assert applied.returncode == 1
    out = applied.stdout
    assert "created svc-50" in out and "updated svc-01" in out and "deleted svc-48" in out
    assert "FAILED svc-02: " in out and "(left as it was)" in out
    assert "Apply: 1 created, 1 updated, 1 deleted, 1 failed, 47 unchanged." in out
    assert "1 of 4 changes failed" in applied.stderr
    assert redis_client.hgetall("tokenkeeper:token:svc-02") == before  # as it was
    assert json.loads(redis_client.hget("tokenkeeper:integration:svc-01", "spec"))["scopes"] == ["read"]
    assert not redis_client.exists("tokenkeeper:integration:svc-48")
    assert redis_client.exists("tokenkeeper:integration:by-hand")

    # What failed is what is left.
    left = cli(env, "plan", "--prune", str(file))
    assert left.returncode == 2 and "Plan: 0 to create, 1 to update, 0 to delete, 49 unchanged." in left.stdout

    for run in (planned, pruned, applied, again, left):
        for secret in (SECRET, "not-the-secret", refresh_token):
            assert secret not in run.stdout + run.stderr


def test_apply_asks_and_without_a_terminal_changes_nothing(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str], redis_client: Any, tmp_path: Path
) -> None:
    start_processes("worker")
    file = tmp_path / "team.yaml"
    write(file, [spec(token_server, "svc")], project="team")
    run = cli({**process_env, "SVC_SECRET": SECRET}, "apply", str(file))
    assert run.returncode == 1
    assert "pass --yes" in run.stderr
    assert not redis_client.exists("tokenkeeper:integration:svc")
    assert token_server.grants == []


def test_another_projects_integration_is_an_error_and_nothing_is_applied(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str], redis_client: Any, tmp_path: Path
) -> None:
    start_processes("worker")
    env = {**process_env, "SVC_SECRET": SECRET}
    theirs, ours = tmp_path / "theirs.yaml", tmp_path / "ours.yaml"
    write(theirs, [spec(token_server, "shared")], project="theirs")
    assert cli(env, "apply", "--yes", str(theirs)).returncode == 0
    made_by_hand = json.dumps({**spec(token_server, "by-hand"), "client_secret": SECRET})
    assert cli(env, "create", "-", stdin=made_by_hand).returncode == 0
    write(
        ours,
        [spec(token_server, "shared", scopes="admin"), spec(token_server, "mine"), spec(token_server, "by-hand")],
        project="ours",
    )
    planned = cli(env, "plan", str(ours))
    assert planned.returncode == 1
    assert "! shared" in planned.stdout and "kept by project 'theirs', not 'ours'" in planned.stdout
    # One made by hand is adopted: nothing differs but whose it is.
    assert "~ by-hand  update: managed_by" in planned.stdout
    applied = cli(env, "apply", "--yes", str(ours))
    assert applied.returncode == 1 and "nothing was applied" in applied.stderr
    assert not redis_client.exists("tokenkeeper:integration:mine")
    assert json.loads(redis_client.hget("tokenkeeper:integration:shared", "spec"))["scopes"] == []


def test_integrations_stored_before_digests_are_compared_by_their_stored_values(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str], redis_client: Any, tmp_path: Path
) -> None:
    """An integration created by an older version (no `given` digests) that matches the file is unchanged,
    once adopted by the file; a different secret is still seen."""
    start_processes("worker")
    env = {**process_env, "SVC_SECRET": SECRET}
    file = tmp_path / "old.yaml"
    write(file, [spec(token_server, "old")], project="old")
    assert cli(env, "apply", "--yes", str(file)).returncode == 0
    redis_client.hdel("tokenkeeper:integration:old", "given")
    assert cli(env, "plan", str(file)).returncode == 0
    env["SVC_SECRET"] = "rotated-secret"
    planned = cli(env, "plan", str(file))
    assert planned.returncode == 2 and "client_secret (secret, changed)" in planned.stdout
