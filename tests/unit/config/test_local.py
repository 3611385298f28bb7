"""Entry points on standalone's machine find its Redis, key and operator password without variables."""

from __future__ import annotations

from pathlib import Path

from config import load_settings, local_environ


def test_the_data_dir_supplies_what_the_environment_lacks(tmp_path: Path) -> None:
    """With standalone's files in the data dir, Redis URL (with the service user), key and operator password load."""
    (tmp_path / "redis-tokenkeeper.password").write_text("p/w+d\n")
    (tmp_path / "secret.key").write_text("a-key\n")
    (tmp_path / "operator.password").write_text("op-pw\n")
    environ = local_environ({"TOKENKEEPER_DATA_DIR": str(tmp_path), "TOKENKEEPER_REDIS_PORT": "7001"})
    assert environ["TOKENKEEPER_REDIS_URL"] == "redis://tokenkeeper:p%2Fw%2Bd@127.0.0.1:7001/0"
    assert environ["TOKENKEEPER_SECRET_KEY"] == "a-key"
    assert environ["TOKENKEEPER_OPERATOR_PASSWORD"] == "op-pw"


def test_variables_that_are_set_win(tmp_path: Path) -> None:
    """A TOKENKEEPER_REDIS_URL (or key, or password) in the environment is never replaced by a file."""
    (tmp_path / "redis-tokenkeeper.password").write_text("local\n")
    (tmp_path / "secret.key").write_text("file-key\n")
    given = {"TOKENKEEPER_DATA_DIR": str(tmp_path), "TOKENKEEPER_REDIS_URL": "redis://u:p@redis.example:6379/0",
             "TOKENKEEPER_SECRET_KEY": "env-key"}
    assert local_environ(given) == given


def test_without_standalone_files_the_default_names_the_local_port(tmp_path: Path) -> None:
    """No files, no URL: nothing is added, and the settings point at 127.0.0.1 on TOKENKEEPER_REDIS_PORT."""
    environ = local_environ({"TOKENKEEPER_DATA_DIR": str(tmp_path / "none")})
    assert "TOKENKEEPER_REDIS_URL" not in environ
    assert load_settings(environ).redis_url == "redis://127.0.0.1:6380/0"
    assert load_settings({"TOKENKEEPER_REDIS_PORT": "7002"}).broker_url == "redis://127.0.0.1:7002/0"
