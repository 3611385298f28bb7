"""Importing the entry points reads no settings; each process builds one Celery app, from the settings it loaded.

Each test runs its script in a fresh interpreter: an app built by an earlier test in this
process would hide one built at import, and Celery keeps every app it built in process state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Counts the Celery apps the process builds, from before any module of ours is imported.
COUNT_APPS = """
import json
import celery

built = []
_init = celery.Celery.__init__


def _counting(self, *args, **kwargs):
    built.append(self)
    _init(self, *args, **kwargs)


celery.Celery.__init__ = _counting
"""


def _run(script: str, tmp_path: Path, **variables: str) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENKEEPER_")}
    # A data directory of the test's own, so no standalone files on this machine fill in settings.
    env.update({"TOKENKEEPER_DATA_DIR": str(tmp_path), **variables})
    result = subprocess.run(
        [sys.executable, "-c", COUNT_APPS + script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_entry_points_with_a_bad_environment_reads_nothing(tmp_path: Path) -> None:
    """With TOKENKEEPER_TYPO=1 set, importing the entry points and create_app(Settings(...)) build no app from it."""
    found = _run(
        """
import workers.celery_app
import workers.tasks
import callback_app
from config import Settings

imported_apps = len(built)
flask_app = callback_app.create_app(Settings(queue="explicit"))
celery_app = flask_app.extensions["tokenkeeper"]["celery"]
print(json.dumps({
    "imported_apps": imported_apps,
    "module_app": "app" in vars(workers.celery_app),
    "apps": len(built),
    "queue": celery_app.conf.task_default_queue,
}))
""",
        tmp_path,
        TOKENKEEPER_TYPO="1",
        TOKENKEEPER_QUEUE="from-environment",
    )
    assert found == {"imported_apps": 0, "module_app": False, "apps": 1, "queue": "explicit"}


def test_the_flask_app_builds_exactly_one_celery_app(tmp_path: Path) -> None:
    """create_app() loads the settings once and builds one Celery app, the one its views send with."""
    found = _run(
        """
import callback_app

flask_app = callback_app.create_app()
print(json.dumps({
    "apps": len(built),
    "used": built[0] is flask_app.extensions["tokenkeeper"]["celery"],
    "queue": built[0].conf.task_default_queue,
}))
""",
        tmp_path,
        TOKENKEEPER_QUEUE="web-queue",
    )
    assert found == {"apps": 1, "used": True, "queue": "web-queue"}


def test_a_cli_command_builds_exactly_one_celery_app(tmp_path: Path) -> None:
    """A CLI command that sends a task builds one Celery app, from the settings the CLI loaded."""
    found = _run(
        """
import workers.producer
from workers.cli import main

sent_with = []
workers.producer.call = lambda app, task, *args, **options: sent_with.append(app) or {"deleted": True}
code = main(["delete", "svc"])
print(json.dumps({
    "code": code,
    "apps": len(built),
    "used": sent_with == built,
    "queue": built[0].conf.task_default_queue,
}))
""",
        tmp_path,
        TOKENKEEPER_QUEUE="cli-queue",
    )
    assert found == {"code": 0, "apps": 1, "used": True, "queue": "cli-queue"}


def test_celery_finds_the_app_built_from_the_environment_on_first_access(tmp_path: Path) -> None:
    """`celery -A workers.celery_app` gets one app built from the environment, with the shared tasks bound to it."""
    found = _run(
        """
from celery.app.utils import find_app

from workers.celery_app import settings_of

app = find_app("workers.celery_app")
again = find_app("workers.celery_app")
app.loader.import_default_modules()
print(json.dumps({
    "apps": len(built),
    "same": app is again,
    "queue": settings_of(app).queue,
    "registered": "tokenkeeper.refresh_batch" in app.tasks,
}))
""",
        tmp_path,
        TOKENKEEPER_QUEUE="worker-queue",
    )
    assert found == {"apps": 1, "same": True, "queue": "worker-queue", "registered": True}
