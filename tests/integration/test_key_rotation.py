"""Encryption keys rotate: a new key first, old secrets still readable, re-encrypted by one command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.support.specs import rt_spec
from tests.support.token_server import TokenServer
from workers.engine.declared import decode
from workers.engine.keyrotation import rotate_secrets
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import build_runtime


def test_rotation_keeps_secrets_readable_and_moves_them_to_the_new_key(
    runtime, settings, token_server: TokenServer, redis_client
) -> None:
    """Old ciphertext opens with [new, old]; after rotate-keys it opens with the new key alone."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    Registry(runtime).create(rt_spec(token_server, "other", managed_by="team"))
    new_key = Fernet.generate_key().decode()
    rotated_settings = dataclasses.replace(settings, secret_keys=(new_key, *settings.secret_keys))
    rotated = build_runtime(rotated_settings)
    assert Refresher(rotated).refresh("user").outcome == "refreshed"  # old-key ciphertext still opens

    before = redis_client.hget("tokenkeeper:integration:other", "secrets")
    schedule_before = redis_client.zscore("tokenkeeper:schedule", "other")
    report = rotate_secrets(rotated)
    assert report.rotated == 2 and report.busy == []
    after = redis_client.hget("tokenkeeper:integration:other", "secrets")
    assert after != before
    Fernet(new_key.encode()).decrypt(after.encode())
    with pytest.raises(InvalidToken):
        Fernet(settings.secret_keys[0].encode()).decrypt(after.encode())
    assert redis_client.zscore("tokenkeeper:schedule", "other") == schedule_before

    only_new = build_runtime(dataclasses.replace(settings, secret_keys=(new_key,)))
    assert Refresher(only_new).refresh("other").outcome == "refreshed"
    assert token_server.reused == []
    # `plan` still recognises what was given: the digests' key was rotated with the secrets.
    given = decode(redis_client.hget("tokenkeeper:integration:other", "given"))
    assert only_new.digests.of("other", "client_secret", "client-secret") == given["client_secret"]


def test_rotate_keys_command(process_env, runtime, token_server: TokenServer) -> None:
    """`tokenkeeper rotate-keys` reports how many it re-encrypted and exits 0."""
    import subprocess
    import sys

    from tests.support.processes import ROOT

    Registry(runtime).create(rt_spec(token_server, "user"))
    env = {
        **process_env,
        "TOKENKEEPER_SECRET_KEY": f"{Fernet.generate_key().decode()},{process_env['TOKENKEEPER_SECRET_KEY']}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "rotate-keys"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 1 integration" in result.stdout


def on_disk(folder: Path, text: str) -> bool:
    """Whether any file under ``folder`` holds ``text``."""
    return any(text.encode() in path.read_bytes() for path in folder.rglob("*") if path.is_file())


def test_rotate_keys_takes_the_old_ciphertext_off_the_disk(
    process_env, runtime, token_server: TokenServer, redis_client, redis_data_dir: Path
) -> None:
    """Secrets sealed under the old key are in the AOF before rotate-keys and nowhere on disk after it."""
    import subprocess
    import sys

    from tests.support.processes import ROOT, wait_until

    Registry(runtime).create(rt_spec(token_server, "user"))
    old = redis_client.hget("tokenkeeper:integration:user", "secrets")
    wait_until(lambda: on_disk(redis_data_dir, old), 5, "the sealed secrets to reach the AOF")
    env = {
        **process_env,
        "TOKENKEEPER_SECRET_KEY": f"{Fernet.generate_key().decode()},{process_env['TOKENKEEPER_SECRET_KEY']}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "rotate-keys"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    new = redis_client.hget("tokenkeeper:integration:user", "secrets")
    assert new != old
    assert on_disk(redis_data_dir, new), "the rewritten AOF holds the current values, as written"
    assert not on_disk(redis_data_dir, old)
