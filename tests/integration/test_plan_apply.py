"""`tokenkeeper plan` / `apply`: a file of 50 integrations kept in step, with a real worker and token server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_cli import cli
from tests.support.specs import rt_spec
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
    assert "+ svc-00  create (→ 127.0.0.1; client_secret from env SVC_SECRET)" in planned.stdout
    assert "+ user    create (→ 127.0.0.1; client_secret from env SVC_SECRET; refresh_token from file rt.txt)" in (
        planned.stdout
    )

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
    # A secret's reference and where it goes are shown, for whoever reviews the change.
    assert "~ svc-02  update: client_secret (secret, changed) (→ 127.0.0.1; client_secret from env WRONG_SECRET)" in (
        planned.stdout
    )
    assert "svc-48" not in planned.stdout  # not without --prune
    pruned = cli(env, "plan", "--prune", str(file))
    assert "- svc-48  delete" in pruned.stdout and "by-hand" not in pruned.stdout
    assert "Plan: 1 to create, 2 to update, 1 to delete, 47 unchanged." in pruned.stdout

    applied = cli(env, "apply", "--prune", "--yes", str(file))
    assert applied.returncode == 1
    out = applied.stdout
    assert "created svc-50" in out and "updated svc-01" in out
    assert "FAILED svc-02: " in out and "(left as it was)" in out
    # Deleting revokes at the provider: not while a change before it failed.
    assert "not deleted: svc-48 (a change above failed" in out
    assert "Apply: 1 created, 1 updated, 0 deleted, 1 failed, 47 unchanged." in out
    assert "1 of 3 changes failed" in applied.stderr
    assert redis_client.hgetall("tokenkeeper:token:svc-02") == before  # as it was
    assert json.loads(redis_client.hget("tokenkeeper:integration:svc-01", "spec"))["scopes"] == ["read"]
    assert redis_client.exists("tokenkeeper:integration:svc-48")

    # What failed is what is left; with the right secret behind the reference, svc-02 is as given.
    left = cli(env, "plan", "--prune", str(file))
    assert left.returncode == 2 and "Plan: 0 to create, 1 to update, 1 to delete, 49 unchanged." in left.stdout
    env["WRONG_SECRET"] = SECRET
    finished = cli(env, "apply", "--prune", "--yes", str(file))
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "Apply: 0 created, 0 updated, 1 deleted, 0 failed, 50 unchanged." in finished.stdout
    assert not redis_client.exists("tokenkeeper:integration:svc-48")
    assert redis_client.exists("tokenkeeper:integration:by-hand")

    for run in (planned, pruned, applied, again, left, finished):
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
    # One made by hand is taken over only when asked to.
    assert "! by-hand" in planned.stdout and "kept by no file; pass --adopt" in planned.stdout
    write(ours, [spec(token_server, "mine"), spec(token_server, "by-hand")], project="ours")
    adopting = cli(env, "plan", "--adopt", str(ours))
    assert adopting.returncode == 2 and "~ by-hand  update: managed_by" in adopting.stdout
    write(ours, [spec(token_server, "shared", scopes="admin"), spec(token_server, "mine")], project="ours")
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


def test_a_rename_that_would_revoke_the_refresh_token_it_takes_is_refused(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str], redis_client: Any, tmp_path: Path
) -> None:
    """Renaming in the file deletes the old integration, which revokes its refresh token at the provider: a
    new one created with that same token would be dead at once, so the plan refuses it and applies nothing."""
    start_processes("worker")
    token_server.rotate = False
    token_server.lifetime = 3600.0
    env = {**process_env, "SVC_SECRET": SECRET}
    (tmp_path / "rt.txt").write_text(token_server.new_refresh_token())
    crm = {
        "grant_type": "refresh_token",
        "client_id": "client-id",
        "client_secret": {"env": "SVC_SECRET"},
        "refresh_url": token_server.url,
        "revocation_url": token_server.revocation_url,
        "refresh_token": {"file": "rt.txt"},
    }
    file = tmp_path / "crm.yaml"
    file.write_text(yaml.safe_dump({"project": "crm", "integrations": {"crm": crm}}))
    assert cli(env, "apply", "--yes", str(file)).returncode == 0
    file.write_text(yaml.safe_dump({"project": "crm", "integrations": {"crm_v2": crm}}))
    renamed = cli(env, "apply", "--prune", "--yes", str(file))
    assert renamed.returncode == 1
    assert "! crm_v2" in renamed.stdout and "takes the refresh token of crm, which --prune deletes" in renamed.stdout
    assert redis_client.exists("tokenkeeper:integration:crm") and token_server.revoked == []


def test_a_lost_digest_key_never_sends_a_retired_refresh_token_again(runtime: Any, token_server: TokenServer) -> None:
    """Digests made under a key that is gone say nothing: compared by stored values, the file's refresh token
    (rotated away since) counts as unchanged rather than as a change that would send it again."""
    from workers.engine.planning import Planner
    from workers.engine.refresher import Refresher
    from workers.engine.registry import Registry
    from workers.engine.runtime import build_runtime

    given = rt_spec(token_server, "crm", managed_by="p")
    Registry(runtime).create(given)
    assert Refresher(runtime).refresh("crm").outcome == "refreshed"  # the provider rotated it
    runtime.store.redis.delete("tokenkeeper:given_key")
    later = build_runtime(runtime.settings)  # a process that starts after the loss makes a new key
    plan = Planner(later).plan([given], "p", prune=False)
    assert plan.unchanged == ["crm"] and not plan.update and not plan.errors
    changed = Planner(later).plan([{**given, "client_secret": "another"}], "p", prune=False)
    assert changed.update["crm"].secrets == ("client_secret",)
