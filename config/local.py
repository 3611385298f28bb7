"""The environment of a process on the machine where ``tokenkeeper standalone`` keeps its data.

``standalone`` generates the Redis passwords, the secret key and the operator
password into the data directory (0600 files). An entry point started by hand on
the same machine (the CLI, ``celery -A workers.celery_app``, the Flask factory)
finds them here, so it needs no variables; a variable that is set always wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from config.settings import Settings, SettingsError, variable_name

# Files standalone writes into the data directory.
SERVICE_PASSWORD_FILE = "redis-tokenkeeper.password"  # noqa: S105 -- a file name, not a password
RUNNER_PASSWORD_FILE = "redis-runner.password"  # noqa: S105 -- a file name
SECRET_KEY_FILE = "secret.key"  # noqa: S105 -- a file name
OPERATOR_PASSWORD_FILE = "operator.password"  # noqa: S105 -- a file name
SERVICE_USER = "tokenkeeper"


def local_redis_url(password: str, port: int) -> str:
    return f"redis://{SERVICE_USER}:{quote(password, safe='')}@127.0.0.1:{port}/0"


def local_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus what standalone left in the data directory for the variables it lacks."""
    result = dict(environ)
    data_dir = Path(environ.get(variable_name("data_dir"), "").strip() or Settings.data_dir)
    redis_url = variable_name("redis_url")
    if redis_url not in environ:
        password = _read(data_dir / SERVICE_PASSWORD_FILE)
        port = environ.get(variable_name("redis_port"), "").strip() or str(Settings.redis_port)
        if password and port.isdigit():
            result[redis_url] = local_redis_url(password, int(port))
    for field_name, file_name in (("secret_keys", SECRET_KEY_FILE), ("operator_password", OPERATOR_PASSWORD_FILE)):
        variable = variable_name(field_name)
        if variable not in environ:
            value = _read(data_dir / file_name)
            if value:
                result[variable] = value
    return result


def _read(path: Path) -> str:
    """The file's text, or '' when there is none; refused when others could have written or read it.

    These files hand out the Redis URL and the secret key: a folder planted in a cloned repository, or
    one another user can write to, must not decide which Redis we talk to or which key we seal to.
    """
    try:
        status, folder = path.stat(), path.parent.stat()
    except OSError:
        return ""
    uid = os.getuid()
    if status.st_uid != uid or folder.st_uid != uid:
        raise SettingsError(
            f"{path}: not owned by this user, so it is not trusted; "
            "set the TOKENKEEPER_* variables instead, or remove it"
        )
    if status.st_mode & 0o077 or folder.st_mode & 0o022:
        raise SettingsError(
            f"{path}: others may read or change it, so it is not trusted; chmod 600 {path} and chmod 700 {path.parent}"
        )
    return path.read_text().strip()
