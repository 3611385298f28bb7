"""The tokenkeeper command as a user runs it, against a real worker and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any
from urllib.parse import unquote

import pytest
import redis

from tests.support.processes import ROOT
from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.e2e


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_day_with_the_cli(token_server: TokenServer, start_processes, process_env, redis_client: redis.Redis) -> None:
    """create from stdin, list, show, token, render, refresh and delete all work and exit 0."""
    start_processes("worker")
    created = cli(process_env, "create", "-", stdin=json.dumps(cc_spec(token_server, "svc", scopes="read")))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["status"] == "active"

    listed = cli(process_env, "list")
    assert listed.returncode == 0 and "svc" in listed.stdout and "active" in listed.stdout

    shown = cli(process_env, "show", "svc")
    assert shown.returncode == 0 and "client-secret" not in shown.stdout
    assert json.loads(shown.stdout)["history"][0]["status"] == "active"

    token = cli(process_env, "token", "svc")
    assert token.stdout.strip() == redis_client.hget("tokenkeeper:token:svc", "access_token")

    rendered = cli(
        process_env,
        "render",
        "Authorization: {{ $.integrations.svc.token_type }} {{ $.integrations.svc.access_token }}",
    )
    assert rendered.stdout.strip() == f"Authorization: Bearer {token.stdout.strip()}"

    refreshed = cli(process_env, "refresh", "svc")
    assert json.loads(refreshed.stdout)["outcome"] == "refreshed"
    assert cli(process_env, "token", "svc").stdout.strip() != token.stdout.strip()

    deleted = cli(process_env, "delete", "svc")
    assert deleted.returncode == 0 and json.loads(deleted.stdout) == {"name": "svc", "deleted": True}
    # What is left are the service-wide metrics counters; nothing of the integration.
    assert [
        key
        for key in redis_client.keys("tokenkeeper:*")
        if not key.startswith(("tokenkeeper:metrics:", "tokenkeeper:given_key"))
    ] == []


def test_errors_are_one_line_and_non_zero(token_server: TokenServer, start_processes, process_env, tmp_path) -> None:
    """Bad JSON, a bad spec, an unknown name and a bad template each give exit 1 and one line naming the problem."""
    start_processes("worker")
    bad_file = tmp_path / "spec.json"
    bad_file.write_text("{not json")
    cases = [
        (("create", str(bad_file)), None, "not valid JSON"),
        (("create", str(tmp_path / "missing.json")), None, "cannot read"),
        (("create", "-"), json.dumps({**cc_spec(token_server, "svc"), "token_url": "ftp://x"}), "token_url"),
        (("create", "-"), json.dumps(cc_spec(token_server, "svc", client_secret="nope")), "invalid_client"),
        (("show", "ghost"), None, "ghost"),
        (("token", "ghost"), None, "ghost"),
        (("render", "{{ $.integrations.ghost.access_token }}"), None, "ghost"),
        (("authorize-url", "ghost"), None, "ghost"),
    ]
    for args, stdin, expected in cases:
        result = cli(process_env, *args, stdin=stdin)
        assert result.returncode == 1, (args, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
        assert "nope" not in result.stderr


def test_no_worker_and_bad_settings_are_explained(process_env) -> None:
    """Without a worker, create times out with a hint; a bad setting is named."""
    result = cli(process_env, "delete", "svc", "--timeout", "1")
    assert result.returncode == 1 and "no worker answered" in result.stderr
    result = cli({**process_env, "TOKENKEEPER_LOCK_TTL": "soon"}, "list")
    assert result.returncode == 1 and "TOKENKEEPER_LOCK_TTL" in result.stderr


def _link(url: str, settings, name: str = "drive") -> Any:
    """The verified link behind an authorization URL (raises if it is not a valid one for ``name``)."""
    from workers.engine.links import LinkSigner

    prefix = f"{settings.public_url}/oauth/authorize/{name}?t="
    assert url.startswith(prefix), url
    return LinkSigner(settings.secret_keys).verify(unquote(url[len(prefix) :]), name, time.time())


def test_creating_an_authorization_code_integration_prints_what_to_do(start_processes, process_env, settings) -> None:
    """The callback URL to register and the link for the user are printed."""
    start_processes("worker")
    spec = {
        "name": "drive",
        "grant_type": "authorization_code",
        "client_id": "a",
        "client_secret": "b",
        "token_url": "https://idp.example/token",
        "auth_url": "https://idp.example/auth",
    }
    result = cli(process_env, "create", "-", stdin=json.dumps(spec))
    assert result.returncode == 0, result.stderr
    assert f"{settings.public_url}/oauth/callback" in result.stderr
    assert f"{settings.public_url}/oauth/authorize/drive" in result.stderr
    url = cli(process_env, "authorize-url", "drive")
    created = _link(json.loads(result.stdout)["authorization_url"], settings)
    made = _link(url.stdout.strip(), settings)
    assert made.id != created.id and not made.new_account
    assert abs(made.expires_at - (time.time() + settings.authorize_link_ttl)) < 60


def test_authorize_url_takes_a_lifetime_and_new_account(process_env, settings, runtime) -> None:
    """--expires DURATION sets the link's lifetime, --new-account marks it; a bad duration or a missing
    secret key is one clear line and exit 1."""
    from workers.engine.registry import Registry

    Registry(runtime).create(
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "a",
            "client_secret": "b",
            "token_url": "https://idp.example/token",
            "auth_url": "https://idp.example/auth",
        }
    )
    for given, seconds in (("90s", 90), ("30m", 1800), ("7d", 7 * 86400), ("120", 120)):
        result = cli(process_env, "authorize-url", "drive", "--expires", given, "--new-account")
        assert result.returncode == 0, result.stderr
        link = _link(result.stdout.strip(), settings)
        assert link.new_account and abs(link.expires_at - (time.time() + seconds)) < 30, given
        assert "valid until" in result.stderr
    for bad in ("soon", "-5m", "0", "3w"):
        result = cli(process_env, "authorize-url", "drive", f"--expires={bad}")
        assert result.returncode == 1 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and "--expires" in result.stderr, result.stderr
    keyless = {key: value for key, value in process_env.items() if key != "TOKENKEEPER_SECRET_KEY"}
    result = cli(keyless, "authorize-url", "drive")
    assert result.returncode == 1 and "TOKENKEEPER_SECRET_KEY" in result.stderr and result.stdout == ""


def test_bulk_create_from_json_lines(
    token_server: TokenServer, start_processes, process_env, tmp_path, redis_client: redis.Redis
) -> None:
    """A JSON Lines file of 40 specs, two bad: 38 created, the two named, a progress bar, exit 1."""
    start_processes("worker")
    lines = [json.dumps(cc_spec(token_server, f"svc{i}")) for i in range(38)]
    lines.insert(5, json.dumps({**cc_spec(token_server, "bad_url"), "token_url": "ftp://x"}))
    lines.insert(20, json.dumps(cc_spec(token_server, "bad_secret", client_secret="nope")))
    specs = tmp_path / "specs.jsonl"
    specs.write_text("\n".join(lines) + "\n")
    result = cli(process_env, "create", str(specs))
    assert result.returncode == 1
    assert json.loads(result.stdout)["created"] == 38 and json.loads(result.stdout)["failed"] == 2
    assert "40/40" in result.stderr and "bad_url: " in result.stderr and "bad_secret: " in result.stderr
    assert "invalid_client" in result.stderr and "nope" not in result.stderr
    assert len(redis_client.smembers("tokenkeeper:names")) == 38


def test_public_key_and_seal_make_boxes_the_worker_opens(
    token_server: TokenServer, start_processes, process_env, secret_key: str, redis_client: redis.Redis
) -> None:
    """public-key prints the key derived from the first secret key; seal's output pasted into a spec creates it."""
    from cryptography.fernet import Fernet

    from workers.crypto.sealing import public_key_for

    printed = cli(process_env, "public-key")
    assert printed.returncode == 0 and printed.stdout.strip() == public_key_for([secret_key])
    rotated = cli(
        {**process_env, "TOKENKEEPER_SECRET_KEY": f"{Fernet.generate_key().decode()},{secret_key}"}, "public-key"
    )
    assert rotated.stdout.strip() not in ("", printed.stdout.strip())
    sealed = cli(process_env, "seal", stdin="client-secret\n")
    assert sealed.returncode == 0 and "client-secret" not in sealed.stdout
    bare = cli(process_env, "seal", "--base64", stdin="client-secret")
    assert json.loads(sealed.stdout).keys() == {"sealed"} and "{" not in bare.stdout
    start_processes("worker")
    # Without the secret key, the CLI seals to the key pinned in TOKENKEEPER_PUBLIC_KEY, and its boxes open too.
    no_key = {key: value for key, value in process_env.items() if key != "TOKENKEEPER_SECRET_KEY"}
    no_key["TOKENKEEPER_PUBLIC_KEY"] = printed.stdout.strip()
    assert cli(no_key, "public-key").stdout == printed.stdout
    by_key = cli(no_key, "seal", "--public-key", printed.stdout.strip(), stdin="client-secret").stdout
    for name, box in (
        ("a", json.loads(sealed.stdout)),
        ("b", {"sealed": bare.stdout.strip()}),
        ("c", json.loads(by_key)),
    ):
        spec = {**cc_spec(token_server, name), "client_secret": box}
        created = cli(no_key, "create", "-", stdin=json.dumps(spec))
        assert created.returncode == 0, created.stderr
    updated = cli(no_key, "update", "a", "-", stdin=json.dumps({"client_secret": "client-secret"}))
    assert updated.returncode == 0, updated.stderr


def test_sealing_without_any_key_is_explained(process_env, redis_client: redis.Redis) -> None:
    """With neither the secret key nor a pinned public key, seal and public-key say what to set; Redis is not asked."""
    from cryptography.fernet import Fernet

    from workers.crypto.sealing import public_key_for

    # A key planted where workers used to publish theirs is not a key to seal to.
    redis_client.set("tokenkeeper:public-key", public_key_for([Fernet.generate_key().decode()]))
    no_key = {key: value for key, value in process_env.items() if key != "TOKENKEEPER_SECRET_KEY"}
    for args in (("public-key",), ("seal",)):
        result = cli(no_key, *args, stdin="x")
        assert result.returncode == 1 and result.stdout == "", result.stdout
        assert result.stderr.count("\n") == 1 and "set TOKENKEEPER_PUBLIC_KEY" in result.stderr, result.stderr
        assert "--public-key" in result.stderr
    empty = cli(process_env, "seal", stdin="")
    assert empty.returncode == 1 and "nothing to seal" in empty.stderr
