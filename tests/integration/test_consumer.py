"""Reading tokens: the Python helper, min_valid, and templates in one round trip."""

from __future__ import annotations

import threading

import pytest
import redis

from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import TokenServer
from workers.consumer import TokenReader
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.errors import NotFoundError, StateError, TemplateError, TokenkeeperError
from workers.templates import render


class CountingConnection(redis.Connection):
    """Counts every write to the socket: one per round trip, however many commands it carries."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


def test_read_returns_the_stored_token(runtime, token_server: TokenServer, redis_url: str) -> None:
    """The helper's Token mirrors the consumer hash; an unknown name is NotFoundError."""
    Registry(runtime).create(cc_spec(token_server, "svc", scopes="a"))
    token = TokenReader(redis.Redis.from_url(redis_url)).read("svc")
    assert token.access_token.startswith("at-") and token.scope == "a" and token.status == "active"
    assert token.access_token not in repr(token)
    with pytest.raises(NotFoundError, match="nope"):
        TokenReader(redis.Redis.from_url(redis_url)).read("nope")


def test_min_valid_refreshes_now_and_waits_for_it(runtime, token_server: TokenServer, redis_url: str) -> None:
    """A 5 s token asked for with min_valid=60 is refreshed at once... and still too short, so it times out;
    with min_valid=3 the refreshed token is returned."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    first = TokenReader(redis.Redis.from_url(redis_url)).read("user")
    asked: list[str] = []

    def request_refresh(name: str) -> None:
        asked.append(name)
        threading.Thread(target=Refresher(runtime).refresh, args=(name,)).start()

    reader = TokenReader(redis.Redis.from_url(redis_url), request_refresh=request_refresh)
    assert reader.get("user", min_valid=1).access_token == first.access_token  # fresh enough: no refresh
    assert asked == []
    token_server.lifetime = 30
    fresh = reader.get("user", min_valid=20, timeout=10)
    assert fresh.access_token != first.access_token and asked == ["user"]
    with pytest.raises(TokenkeeperError, match=r"within 0\.5s"):
        reader.get("user", min_valid=3600, timeout=0.5)


def test_a_stopped_integration_is_not_waited_for(runtime, token_server: TokenServer, redis_url: str) -> None:
    """needs_reauth with min_valid raises at once with the status, instead of waiting out the timeout."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.live_refresh.clear()
    Refresher(runtime).refresh("user")
    reader = TokenReader(redis.Redis.from_url(redis_url), request_refresh=lambda name: None)
    with pytest.raises(StateError, match="needs_reauth"):
        reader.get("user", min_valid=3600, timeout=30)


def test_a_template_is_filled_in_one_round_trip(runtime, token_server: TokenServer, redis_url: str) -> None:
    """Three placeholders over two integrations cost exactly one Redis round trip."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    Registry(runtime).create(cc_spec(token_server, "with-dash"))
    counting = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    counting.ping()
    reader = TokenReader(counting)
    CountingConnection.sends = 0
    out = render(
        'Bearer {{ $.integrations.svc.access_token }} {{ $.integrations["with-dash"].access_token }} '
        "{{ $.integrations.svc.status }}",
        reader,
    )
    plain = redis.Redis.from_url(redis_url, decode_responses=True)
    assert out == (
        f"Bearer {plain.hget('tokenkeeper:token:svc', 'access_token')} "
        f"{plain.hget('tokenkeeper:token:with-dash', 'access_token')} active"
    )
    assert CountingConnection.sends == 1


def test_an_unknown_integration_in_a_template_is_named(runtime, token_server: TokenServer, redis_url: str) -> None:
    """Never an empty string: the missing integration is named in the error."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    with pytest.raises(TemplateError, match="ghost"):
        render(
            "{{ $.integrations.svc.access_token }} {{ $.integrations.ghost.access_token }}",
            TokenReader(redis.Redis.from_url(redis_url)),
        )
