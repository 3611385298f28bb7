"""The documented Redis ACL user for workflow runners reads tokens and nothing else."""

from __future__ import annotations

import pytest
import redis

from tests.conftest import cc_spec
from tests.support.token_server import TokenServer
from workers.consumer import TokenReader
from workers.registry import Registry
from workers.templates import render

# The command README gives operators, verbatim.
RUNNER_ACL = ("ACL SETUSER runner on >runner-pass resetkeys ~tokenkeeper:token:* resetchannels "
              "-@all +hgetall +hget +hmget +ping")


def test_the_runner_user_reads_tokens_only(runtime, token_server: TokenServer, redis_url: str,
                                           redis_client: redis.Redis) -> None:
    """It can HGETALL a token hash and render templates; it cannot read secrets, list keys, read queues or write."""
    redis_client.execute_command(*RUNNER_ACL.split())
    try:
        Registry(runtime).create(cc_spec(token_server, "svc"))
        redis_client.lpush("tokenkeeper", "a queued task message")
        runner = redis.Redis.from_url(redis_url, username="runner", password="runner-pass", decode_responses=True)
        assert runner.hgetall("tokenkeeper:token:svc")["status"] == "active"
        assert render("{{ $.integrations.svc.status }}", TokenReader(runner)) == "active"
        denied = [
            lambda: runner.hgetall("tokenkeeper:integration:svc"),
            lambda: runner.get("tokenkeeper:lock:svc"),
            lambda: runner.keys("*"),
            lambda: runner.scan(0),
            lambda: runner.lrange("tokenkeeper", 0, -1),
            lambda: runner.hset("tokenkeeper:token:svc", "access_token", "forged"),
            lambda: runner.delete("tokenkeeper:token:svc"),
            lambda: runner.publish("tokenkeeper:events:svc", "x"),
            lambda: runner.config_get("*"),
        ]
        for attempt in denied:
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
    finally:
        redis_client.acl_deluser("runner")
