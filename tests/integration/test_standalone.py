"""`tokenkeeper standalone` on a machine with no Redis running: everything comes up, and goes down on Ctrl-C.

Its Redis answers only its two ACL users, whose passwords are in 0600 files and in no process's argv.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.integration.test_redis_files import modes
from tests.integration.test_runner_acl import assert_only_our_users_get_in
from tests.support.ports import free_port
from tests.support.processes import ROOT, wait_until
from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer
from workers.engine.keyrotation import wait_idle
from workers.ops.redis_server import RedisUsers, is_up

pytestmark = pytest.mark.e2e


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
    except OSError:
        return 0, {}


def redis_client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def children_of(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: the parts, gunicorn's and Celery's pool processes, redis-server."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
        children = [int(line) for line in out.split()]
        found += children
        queue += children
    return found


def argv_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_standalone_starts_redis_and_every_part_then_stops_them(tmp_path: Path, token_server: TokenServer) -> None:
    """Without TOKENKEEPER_REDIS_URL, standalone starts its own Redis (AOF on, ACL users only), then worker, beat,
    app, Flower; the CLI finds it with no variables; Flower lists our tasks by their contract names with the
    integration name and no secret, scheduled refreshes as batches naming what they carry, and never the tick."""
    token_server.lifetime = 4.0
    redis_port, app_port, flower_port = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENKEEPER_")}
    env.update(
        {
            "TOKENKEEPER_REDIS_PORT": str(redis_port),
            "TOKENKEEPER_BIND": f"127.0.0.1:{app_port}",
            "TOKENKEEPER_PUBLIC_URL": f"http://127.0.0.1:{app_port}",
            "TOKENKEEPER_FLOWER_PORT": str(flower_port),
            "TOKENKEEPER_DATA_DIR": str(tmp_path / "data"),
            "TOKENKEEPER_SCHEDULE_INTERVAL": "1",
            # 4-second tokens refreshed every 3 s, so Flower shows scheduled refreshes within the test.
            "TOKENKEEPER_MIN_REFRESH_INTERVAL": "1",
            "TOKENKEEPER_ALLOW_PRIVATE_NETWORKS": "true",  # the token server listens on 127.0.0.1
        }
    )
    assert not is_up(f"redis://127.0.0.1:{redis_port}/0")
    log = open(tmp_path / "standalone.log", "wb")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "standalone"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        # Each gunicorn process probes on its own: the answer that said 200 is the one to look into.
        healthy = wait_until(lambda: (lambda answer: answer[0] == 200 and answer)(health(app_port)), 90, "healthz", 0.5)
        assert isinstance(healthy, tuple)
        body = healthy[1]
        assert body["checks"]["redis"] == "ok" and body["checks"]["beat"] == "ok"
        commands = " | ".join(children_of(process.pid))
        for part in (" worker ", " beat ", "gunicorn", " flower "):
            assert part in commands, commands
        flower_argv = [argv_of(int(line.split()[0])) for line in children_of(process.pid) if " flower " in line]
        assert "--max_tasks=10000" in flower_argv[0]  # its memory bounded
        assert "--tasks_columns=name,uuid,state,args," in flower_argv[0]  # the list shows what each task carries
        assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
        users = RedisUsers(
            (data / "redis-tokenkeeper.password").read_text().strip(),
            (data / "redis-runner.password").read_text().strip(),
        )
        redis_url = users.service_url(redis_port)
        assert list((tmp_path / "data" / "redis").glob("appendonly*")), "AOF persistence is on"
        flower = f"http://127.0.0.1:{flower_port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(flower, timeout=5)
        assert refused.value.code == 401
        password = (tmp_path / "data" / "operator.password").read_text().strip()
        assert password not in commands
        authorized = urllib.request.Request(
            flower, headers={"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}
        )
        with urllib.request.urlopen(authorized, timeout=5) as response:
            assert response.status == 200
        created = subprocess.run(
            [sys.executable, "-m", "workers.cli", "create", "-"],
            cwd=ROOT,
            env=env,
            input=json.dumps(cc_spec(token_server, "billing_api")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        tasks_url = urllib.request.Request(f"{flower}api/tasks", headers=dict(authorized.headers))

        def flower_tasks() -> dict:
            with urllib.request.urlopen(tasks_url, timeout=5) as response:
                tasks = json.load(response)
            return {
                task["name"]: task
                for task in tasks.values()
                if task.get("name") == "tokenkeeper.create_integration" and task.get("state") == "SUCCESS"
            }

        shown = wait_until(flower_tasks, 30, "Flower to list the creation", 0.5)["tokenkeeper.create_integration"]
        assert "'name': 'billing_api'" in shown["args"] and "<redacted>" in shown["args"]
        assert "client-secret" not in json.dumps(shown)
        service = redis_client_for(redis_url)
        assert service.hget("tokenkeeper:token:billing_api", "access_token") not in json.dumps(shown)

        all_tasks = urllib.request.Request(f"{flower}api/tasks", headers=dict(authorized.headers))

        def listed() -> list[dict]:
            with urllib.request.urlopen(all_tasks, timeout=5) as response:
                return list(json.load(response).values())

        def refresh_batches() -> list[dict]:
            return [t for t in listed() if t.get("name") == "tokenkeeper.refresh_batch" and t.get("state") == "SUCCESS"]

        batch = wait_until(refresh_batches, 30, "Flower to list a scheduled refresh", 0.5)[0]
        assert "'billing_api'" in batch["args"]  # which integrations the batch carries
        # The tick runs inside beat: several ran meanwhile, none is a task an operator has to look past.
        assert not any(task.get("name") == "tokenkeeper.schedule_refreshes" for task in listed())

        assert_only_our_users_get_in(redis_port, users.runner_url(redis_port), "billing_api")
        service.bgrewriteaof()
        wait_idle(service)
        service.bgsave()
        wait_idle(service)
        files = modes(data)
        assert files["."] == 0o700 and files["redis"] == 0o700, files
        for name in (
            "redis-tokenkeeper.password",
            "redis-runner.password",
            "operator.password",
            "secret.key",
            "redis/redis.conf",
            "redis/dump.rdb",
        ):
            assert files[name] == 0o600, (name, files)
        assert all(mode == 0o600 for name, mode in files.items() if name.startswith("redis/appendonlydir/")), files
        secrets_ = [users.service_password, users.runner_password, password, (data / "secret.key").read_text().strip()]
        processes = {pid: argv_of(pid) for pid in descendants(process.pid)}
        assert any("redis-server" in argv for argv in processes.values()), processes
        assert len(processes) >= 6, processes
        for argv in processes.values():
            assert not [secret for secret in secrets_ if secret in argv], f"a password in the argv of {argv}"
        children = [int(line.split()[0]) for line in children_of(process.pid)]
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        assert not is_up(redis_url)
    finally:
        if process.poll() is None:
            # A failed assertion above: stop it as an operator would, so its children do not outlive the test.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
    output = (tmp_path / "standalone.log").read_text()
    assert "started on 127.0.0.1" in output and "Ctrl-C stops everything" in output


def test_standalone_refuses_a_redis_that_lets_anyone_in(tmp_path: Path) -> None:
    """TOKENKEEPER_REDIS_URL naming a Redis whose default user needs no password: a one-line error, nothing started."""
    port = free_port()
    open_redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: is_up(f"redis://127.0.0.1:{port}/0"), 10, "the open Redis to answer")
        env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENKEEPER_")}
        env.update(
            {
                "TOKENKEEPER_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "TOKENKEEPER_DATA_DIR": str(tmp_path / "d"),
                "TOKENKEEPER_BIND": f"127.0.0.1:{free_port()}",
                "TOKENKEEPER_FLOWER_PORT": str(free_port()),
            }
        )
        try:
            result = subprocess.run(
                [sys.executable, "-m", "workers.cli", "standalone"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("standalone ran against a Redis anyone can use")
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "without a password" in lines[0] and "ACL SETUSER default off" in lines[0], lines
        assert redis.Redis(port=port).dbsize() == 0
    finally:
        open_redis.terminate()
        open_redis.wait(10)
