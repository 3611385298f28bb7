"""A Redis master, a replica and a Sentinel watching them, on 127.0.0.1, for failover tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.support.processes import wait_until
from workers.ops.redis_server import SERVICE_USER, RedisUsers, find_server_binary, start_server, wait_ready

MASTER_NAME = "tokenkeeper-test"


class SentinelSet:
    def __init__(self, ports: tuple[int, int, int], data_dir: Path) -> None:
        self.master_port, self.replica_port, self.sentinel_port = ports
        self.processes: list[subprocess.Popen[bytes]] = []
        # Master and replica answer only the ACL users, like every Redis of ours; the sentinel
        # itself holds no data and is asked without credentials (as kombu does).
        self.users = RedisUsers.generate()
        binary = find_server_binary()
        self.processes.append(
            start_server(self.master_port, data_dir / "master", persistent=True, binary=binary, users=self.users)
        )
        wait_ready(self.url_of(self.master_port), self.processes[-1])
        replica = start_server(
            self.replica_port, data_dir / "replica", persistent=True, binary=binary, users=self.users
        )
        self.processes.append(replica)
        wait_ready(self.url_of(self.replica_port), replica)
        # A diskless full sync otherwise waits 5 s for more replicas to join it.
        redis.Redis.from_url(self.url_of(self.master_port)).config_set("repl-diskless-sync-delay", 0)
        replica_client = redis.Redis.from_url(self.url_of(self.replica_port), decode_responses=True)
        # Either node may be the master after a failover: each logs in to the other as the service user.
        for client in (replica_client, redis.Redis.from_url(self.url_of(self.master_port))):
            client.config_set("masteruser", SERVICE_USER)
            client.config_set("masterauth", self.users.service_password)
        replica_client.replicaof("127.0.0.1", self.master_port)
        wait_until(
            lambda: replica_client.info("replication").get("master_link_status") == "up", 30, "the replica to sync", 0.1
        )
        config = data_dir / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {data_dir.resolve()}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel auth-user {MASTER_NAME} {SERVICE_USER}\n"
            f"sentinel auth-pass {MASTER_NAME} {self.users.service_password}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
        )
        self.processes.append(
            subprocess.Popen(
                [binary, str(config), "--sentinel", "--logfile", str((data_dir / "sentinel.log").resolve())],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.sentinel = redis.Redis(port=self.sentinel_port, decode_responses=True, socket_connect_timeout=1)
        # Sentinel learns of the replica from the master's INFO, which it reads every few seconds.
        wait_until(self._replica_known, 30, "sentinel to discover the replica", 0.2)

    def url_of(self, port: int) -> str:
        return self.users.service_url(port)

    @property
    def url(self) -> str:
        """The master's credentials with the sentinel's address, as kombu and our clients read them."""
        return f"sentinel://{SERVICE_USER}:{self.users.service_password}@127.0.0.1:{self.sentinel_port}/0"

    def master_port_now(self) -> int:
        _, port = self.sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)

    def _replica_known(self) -> bool:
        try:
            replicas = self.sentinel.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
        except redis.ConnectionError:
            return False
        return any("s_down" not in str(replica) and str(self.replica_port) in str(replica) for replica in replicas)

    def failover(self) -> None:
        """Promote the replica, and wait until Sentinel names it the master."""
        old = self.master_port_now()
        self.sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_until(lambda: self.master_port_now() != old, 30, "the failover", 0.1)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
