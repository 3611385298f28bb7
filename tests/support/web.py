"""The callback app under gunicorn, as standalone and docker-compose run it."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.processes import ROOT, wait_until


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


class Gunicorn:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.log = open(log_dir / "gunicorn.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.log_path = log_dir / "gunicorn.log"
        bind = env["TOKENKEEPER_BIND"]
        self.url = env["TOKENKEEPER_PUBLIC_URL"]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                bind,
                "-c",
                "python:callback_app.gunicorn_conf",
                "callback_app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _answers(self.url + "/healthz"), 30, "gunicorn to serve", 0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
