"""Entry points on standalone's machine find its Redis, key and operator password without variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import SettingsError, load_settings, local_environ


def test_the_data_dir_supplies_what_the_environment_lacks(tmp_path: Path) -> None:
    """With standalone's files in the data dir, Redis URL (with the service user), key and operator password load."""
    for name, text in (
        ("redis-tokenkeeper.password", "p/w+d\n"),
        ("secret.key", "a-key\n"),
        ("operator.password", "op-pw\n"),
    ):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)  # as standalone writes them
    environ = local_environ({"TOKENKEEPER_DATA_DIR": str(tmp_path), "TOKENKEEPER_REDIS_PORT": "7001"})
    assert environ["TOKENKEEPER_REDIS_URL"] == "redis://tokenkeeper:p%2Fw%2Bd@127.0.0.1:7001/0"
    assert environ["TOKENKEEPER_SECRET_KEY"] == "a-key"
    assert environ["TOKENKEEPER_OPERATOR_PASSWORD"] == "op-pw"


def test_variables_that_are_set_win(tmp_path: Path) -> None:
    """A TOKENKEEPER_REDIS_URL (or key, or password) in the environment is never replaced by a file."""
    (tmp_path / "redis-tokenkeeper.password").write_text("local\n")
    (tmp_path / "secret.key").write_text("file-key\n")
    given = {
        "TOKENKEEPER_DATA_DIR": str(tmp_path),
        "TOKENKEEPER_REDIS_URL": "redis://u:p@redis.example:6379/0",
        "TOKENKEEPER_SECRET_KEY": "env-key",
    }
    assert local_environ(given) == given


def test_without_standalone_files_the_default_names_the_local_port(tmp_path: Path) -> None:
    """No files, no URL: nothing is added, and the settings point at 127.0.0.1 on TOKENKEEPER_REDIS_PORT."""
    environ = local_environ({"TOKENKEEPER_DATA_DIR": str(tmp_path / "none")})
    assert "TOKENKEEPER_REDIS_URL" not in environ
    assert load_settings(environ).redis_url == "redis://127.0.0.1:6380/0"
    assert load_settings({"TOKENKEEPER_REDIS_PORT": "7002"}).broker_url == "redis://127.0.0.1:7002/0"


def test_a_file_others_can_read_or_change_is_not_trusted(tmp_path: Path) -> None:
    """A key file readable by others, or in a folder others can write, is refused with the chmod that fixes it."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    key = data / "secret.key"
    key.write_text("planted-key\n")
    key.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        local_environ({"TOKENKEEPER_DATA_DIR": str(data)})
    key.chmod(0o600)
    data.chmod(0o777)
    with pytest.raises(SettingsError, match="chmod 700"):
        local_environ({"TOKENKEEPER_DATA_DIR": str(data)})
    data.chmod(0o700)
    assert local_environ({"TOKENKEEPER_DATA_DIR": str(data)})["TOKENKEEPER_SECRET_KEY"] == "planted-key"


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root (CI runs as root)")
def test_a_file_owned_by_another_user_is_not_trusted(tmp_path: Path) -> None:
    """A password file another user owns (say, planted in a cloned repository) never supplies the Redis URL."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    planted = data / "redis-tokenkeeper.password"
    planted.write_text("attacker\n")
    planted.chmod(0o600)
    os.chown(planted, 65534, 65534)
    with pytest.raises(SettingsError, match="not owned by this user"):
        local_environ({"TOKENKEEPER_DATA_DIR": str(data)})
