"""Starting real Celery workers and beat for end-to-end tests, and waiting for them by event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``condition`` until it is truthy; for states that publish no event."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class CeleryProcess:
    def __init__(self, role: str, env: dict[str, str], log_dir: Path, extra: list[str]) -> None:
        self.role = role
        self.log_path = log_dir / f"{role}-{len(list(log_dir.glob(role + '*')))}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 -- closed in stop()
        command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", *extra]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """End the process and its children at once: for a test's end, where nothing is watched any more.
        A shutdown costs a worker two seconds (billiard's pool processes sleep a second as they exit), and
        the next test starts from an empty Redis."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def start_worker(
    env: dict[str, str], log_dir: Path, name: str, concurrency: int = 2, pool: str = "prefork", prefetch: int = 4
) -> CeleryProcess:
    return CeleryProcess(
        "worker",
        env,
        log_dir,
        [
            "worker",
            "-Q",
            env.get("TOKENKEEPER_QUEUE", "tokenkeeper"),
            "-n",
            f"{name}@%h",
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "--prefetch-multiplier",
            str(prefetch),
        ],
    )


def pool_children(pid: int) -> list[int]:
    """The prefork pool processes of a worker's main process."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def start_beat(env: dict[str, str], log_dir: Path) -> CeleryProcess:
    return CeleryProcess(
        "beat",
        env,
        log_dir,
        ["beat", "--loglevel", "INFO", "-s", str(log_dir / "celerybeat-schedule")],
    )
