"""Token exchange (RFC 8693) against Authlib's server (an exchange grant on its grant base), with real workers.

An integration exchanging another's token follows it: each new token of the subject is exchanged
at once, so the exchanged token is always made from the subject's current one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.authorization_server import TOKEN_EXCHANGE, AuthorizationServerApp
from tests.support.processes import wait_until
from workers.engine.registry import Registry
from workers.errors import SpecError
from workers.producer import call

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider() -> Iterator[AuthorizationServerApp]:
    server = AuthorizationServerApp(lifetime=4).start()
    server.register_client(client_id="user-app", grant_types=("client_credentials",), scope="read")
    server.register_client(client_id="gateway", client_secret="gw-secret", grant_types=(TOKEN_EXCHANGE,), scope="read")
    yield server
    server.stop()


def _subject(provider: AuthorizationServerApp) -> dict[str, Any]:
    return {
        "name": "okta_user",
        "grant_type": "client_credentials",
        "client_id": "user-app",
        "client_secret": "tk-secret",
        "token_url": provider.token_url,
        "scopes": "read",
    }


def _exchange(provider: AuthorizationServerApp, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "grant_type": "token_exchange",
        "client_id": "gateway",
        "client_secret": "gw-secret",
        "token_url": provider.token_url,
        "revocation_url": f"{provider.base_url}/revoke",
        "audience": "https://downstream.example/api",
        "resource": ["https://downstream.example/api", "https://audit.example/"],
        **fields,
    }


def test_an_exchange_follows_its_subject_integration(
    provider: AuthorizationServerApp, start_processes: Any, celery_client: Any, redis_client: Any
) -> None:
    """Each refresh of the subject is followed by an exchange of its new token, for the audience and resources."""
    start_processes("worker")
    start_processes("beat")
    call(celery_client, "tokenkeeper.create_integration", _subject(provider), timeout=20)
    created = call(
        celery_client,
        "tokenkeeper.create_integration",
        _exchange(provider, "downstream", subject_integration="okta_user"),
        timeout=20,
    )
    assert created["status"] == "active"
    wait_until(lambda: provider.state.issued.get("client_credentials:user-app", 0) >= 3, 30, "two refreshes", 0.2)
    exchanged = provider.state.exchanged

    def every_subject_token_exchanged() -> bool:
        issued = {token.access_token for token in provider.state.tokens if token.client_id == "user-app"}
        return issued <= {subject for _, subject, _, _ in exchanged}

    # Each new token of the subject is exchanged within a moment (not at the exchanged token's own plan).
    wait_until(every_subject_token_exchanged, 3, "each subject token to be exchanged", 0.1)
    assert len({subject for _, subject, _, _ in exchanged}) >= 3
    assert all(
        (client, audience, resources)
        == ("gateway", "https://downstream.example/api", ["https://downstream.example/api", "https://audit.example/"])
        for client, _, audience, resources in exchanged
    )
    token = redis_client.hgetall("tokenkeeper:token:downstream")
    assert token["status"] == "active" and provider.is_valid(token["access_token"])

    deleted = call(celery_client, "tokenkeeper.delete_integration", "downstream", timeout=20)
    assert deleted["revoked"] == ["access_token"], deleted
    assert redis_client.hget("tokenkeeper:integration:okta_user", "dependents") is None


def test_a_stored_subject_token_is_exchanged_again_before_each_expiry(
    runtime: Any, start_processes: Any, redis_client: Any
) -> None:
    """A pasted subject token (sealed like any secret) is exchanged again each time the exchanged token is due."""
    # The subject token lives a minute; what it is exchanged for, three seconds.
    provider = AuthorizationServerApp(lifetime=60, lifetimes={TOKEN_EXCHANGE: 3}).start()
    try:
        provider.register_client(client_id="user-app", grant_types=("client_credentials",), scope="read")
        provider.register_client(client_id="gateway", client_secret="gw-secret", grant_types=(TOKEN_EXCHANGE,))
        Registry(runtime).create(_subject(provider))
        subject = redis_client.hget("tokenkeeper:token:okta_user", "access_token")
        Registry(runtime).create(_exchange(provider, "pasted", subject_token=subject))
        assert subject not in str(redis_client.hgetall("tokenkeeper:integration:pasted"))
        worker = start_processes("worker")
        start_processes("beat")
        wait_until(lambda: len(provider.state.exchanged) >= 3, 20, "two exchanges after the first", 0.2)
        assert {subject_token for _, subject_token, _, _ in provider.state.exchanged} == {subject}
        assert subject not in worker.output()  # the worker logs at INFO
        assert redis_client.hget("tokenkeeper:token:pasted", "status") == "active"
    finally:
        provider.stop()


def test_a_missing_or_looping_subject_is_refused_and_nothing_is_stored(
    provider: AuthorizationServerApp, runtime: Any, redis_client: Any
) -> None:
    """No such subject, a subject that leads back to itself, or both kinds of subject: named errors, nothing stored."""
    registry = Registry(runtime)
    with pytest.raises(SpecError) as caught:
        registry.create(_exchange(provider, "x", subject_integration="nobody"))
    assert "no integration named 'nobody'" in caught.value.errors["subject_integration"][0]
    registry.create(_subject(provider))
    registry.create(_exchange(provider, "a", subject_integration="okta_user"))
    registry.create(_exchange(provider, "b", subject_integration="a"))
    with pytest.raises(SpecError) as caught:
        registry.update("a", {"subject_integration": "b"})
    assert "a -> b -> a" in caught.value.errors["subject_integration"][0]
    with pytest.raises(SpecError) as caught:
        registry.create(_exchange(provider, "c", subject_integration="okta_user", subject_token="t"))
    assert "exactly one" in caught.value.errors["subject_token"][0]
    assert not redis_client.exists("tokenkeeper:integration:x", "tokenkeeper:integration:c")
