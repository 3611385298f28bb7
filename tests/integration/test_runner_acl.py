"""The Redis ACL user for workflow runners reads tokens and nothing else; no one gets in without a password."""

from __future__ import annotations

import pytest
import redis

from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer
from workers.consumer import TokenReader
from workers.engine.registry import Registry
from workers.templates import render


def runner_denials(runner: redis.Redis, name: str = "svc") -> list:
    """What a runner (or anyone holding its password) tries beyond reading a token hash."""
    return [
        lambda: runner.hgetall(f"tokenkeeper:integration:{name}"),
        lambda: runner.hmget(f"tokenkeeper:integration:{name}", ["secrets"]),
        lambda: runner.get(f"tokenkeeper:lock:{name}"),
        # The operators' index names every integration and its status: not the runners' business.
        lambda: runner.hgetall("tokenkeeper:index:cells"),
        lambda: runner.zrangebylex("tokenkeeper:index:names", "-", "+"),
        lambda: runner.keys("*"),
        lambda: runner.scan(0),
        lambda: runner.lrange("tokenkeeper", 0, -1),
        lambda: runner.lpush("tokenkeeper", "a forged task message"),
        lambda: runner.hset(f"tokenkeeper:token:{name}", "access_token", "forged"),
        lambda: runner.delete(f"tokenkeeper:token:{name}"),
        lambda: runner.publish(f"tokenkeeper:events:{name}", "x"),
        lambda: runner.config_get("*"),
        lambda: runner.acl_list(),
        lambda: runner.acl_setuser("runner", enabled=True, commands=["+@all"], keys=["*"]),
    ]


def anonymous_attempts(anonymous: redis.Redis, name: str = "svc") -> list:
    """What a client that never logs in tries: the broker queue, any key, a ping."""
    return [
        lambda: anonymous.ping(),
        lambda: anonymous.get(f"tokenkeeper:token:{name}"),
        lambda: anonymous.hgetall(f"tokenkeeper:integration:{name}"),
        lambda: anonymous.lpush("tokenkeeper", "a forged task message"),
    ]


def assert_only_our_users_get_in(port: int, runner_url: str, name: str = "svc") -> None:
    """Shared by the test Redis and standalone's Redis: anonymous refused, runner reads tokens only."""
    anonymous = redis.Redis(port=port, decode_responses=True)
    for attempt in anonymous_attempts(anonymous, name):
        with pytest.raises(redis.AuthenticationError, match=r"(?i)auth"):
            attempt()
    with pytest.raises(redis.AuthenticationError):
        anonymous.execute_command("AUTH", "default", "")
    runner = redis.Redis.from_url(runner_url, decode_responses=True)
    assert runner.hgetall(f"tokenkeeper:token:{name}")["status"] == "active"
    assert runner.hmget(f"tokenkeeper:token:{name}", ["status"]) == ["active"]
    for attempt in runner_denials(runner, name):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()


def test_the_runner_user_reads_tokens_only(
    runtime, token_server: TokenServer, runner_url: str, redis_client: redis.Redis
) -> None:
    """It can HGETALL a token hash and render templates; it cannot read secrets, list keys, read queues or write."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    redis_client.lpush("tokenkeeper", "a queued task message")
    runner = redis.Redis.from_url(runner_url, decode_responses=True)
    assert runner.hgetall("tokenkeeper:token:svc")["status"] == "active"
    assert render("{{ $.integrations.svc.status }}", TokenReader(runner)) == "active"
    for attempt in runner_denials(runner):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert redis_client.llen("tokenkeeper") == 1


def test_no_client_gets_in_without_a_password(
    runtime, token_server: TokenServer, redis_port: int, runner_url: str
) -> None:
    """The test Redis runs as production does: PING, GET, LPUSH without login get NOAUTH; `AUTH default ""` fails."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    assert_only_our_users_get_in(redis_port, runner_url)
