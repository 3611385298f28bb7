"""`tokenkeeper exec`: a command runs with tokens in its environment, as a shell step would use it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import cli
from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.e2e

# The child writes what it was given to a file (never to the terminal) and exits with a status of its own.
CHILD = (
    "import json, os, sys; "
    "open(sys.argv[1], 'w').write(json.dumps({k: os.environ.get(k) for k in ('T', 'H')})); "
    "sys.exit(7)"
)


def test_a_command_gets_tokens_and_its_exit_status_passes_through(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str], redis_client: Any, tmp_path: Path
) -> None:
    """A bare name and a template both become variables; exit status 7 comes back; nothing prints a token."""
    start_processes("worker")
    token_server.lifetime = 3600.0
    assert cli(process_env, "create", "-", stdin=json.dumps(cc_spec(token_server, "svc-a"))).returncode == 0
    out = tmp_path / "seen.json"
    run = cli(
        process_env,
        "exec",
        "--env",
        "T=svc-a",
        "--env",
        'H=Bearer {{ $.integrations["svc-a"].access_token }}',
        "--",
        sys.executable,
        "-c",
        CHILD,
        str(out),
    )
    token = redis_client.hget("tokenkeeper:token:svc-a", "access_token")
    assert run.returncode == 7, run.stderr
    assert json.loads(out.read_text()) == {"T": token, "H": f"Bearer {token}"}
    assert token not in run.stdout + run.stderr


def test_min_valid_forces_a_refresh_first(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str], redis_client: Any, tmp_path: Path
) -> None:
    """A token valid for less than --min-valid is refreshed (single-flight, by a worker) before the command runs."""
    start_processes("worker")
    token_server.lifetime = 120.0
    cli(process_env, "create", "-", stdin=json.dumps(cc_spec(token_server, "svc")))
    before = redis_client.hget("tokenkeeper:token:svc", "access_token")
    token_server.lifetime = 3600.0  # the next token will be valid long enough
    out = tmp_path / "seen.json"
    run = cli(process_env, "exec", "--min-valid", "600", "--env", "T=svc", "--", sys.executable, "-c", CHILD, str(out))
    assert run.returncode == 7, run.stderr
    seen = json.loads(out.read_text())["T"]
    assert seen != before and seen == redis_client.hget("tokenkeeper:token:svc", "access_token")


def test_the_runner_user_alone_is_enough_when_no_refresh_is_needed(
    token_server: TokenServer,
    start_processes: Any,
    process_env: dict[str, str],
    runner_url: str,
    redis_client: Any,
    tmp_path: Path,
) -> None:
    """With only the read-only runner Redis user: the command runs with the token."""
    start_processes("worker")
    token_server.lifetime = 3600.0
    cli(process_env, "create", "-", stdin=json.dumps(cc_spec(token_server, "svc")))
    runner_env = {**process_env, "TOKENKEEPER_REDIS_URL": runner_url}
    runner_env.pop("TOKENKEEPER_SECRET_KEY", None)
    out = tmp_path / "seen.json"
    run = cli(runner_env, "exec", "--env", "T=svc", "--", sys.executable, "-c", CHILD, str(out))
    assert run.returncode == 7, run.stderr
    assert json.loads(out.read_text())["T"] == redis_client.hget("tokenkeeper:token:svc", "access_token")


def test_bad_use_is_one_line_and_non_zero(
    token_server: TokenServer, start_processes: Any, process_env: dict[str, str]
) -> None:
    """A bad variable name, an unknown integration, no command, a command that does not exist: each said in one line."""
    start_processes("worker")
    cli(process_env, "create", "-", stdin=json.dumps(cc_spec(token_server, "svc")))
    for args, words in (
        (["--env", "1BAD=svc", "--", "true"], "--env"),
        (["--env", "T=nobody", "--", "true"], "nobody"),
        (["--env", "T=svc"], "needs a command"),
        (["--env", "T=svc", "--", "/no/such/program"], "cannot run"),
    ):
        run = cli(process_env, "exec", *args)
        assert run.returncode != 0 and words in run.stderr, (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, (args, run.stderr)
