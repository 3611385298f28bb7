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
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.errors import ProviderError, SpecError
from workers.producer import call

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider() -> Iterator[AuthorizationServerApp]:
    server = AuthorizationServerApp(lifetime=4).start()
    server.register_client(client_id="user-app", grant_types=("client_credentials",), scope="read")
    server.register_client(client_id="gateway", client_secret="gw-secret", grant_types=(TOKEN_EXCHANGE,), scope="read")
    yield server
    server.stop()


def _subject(provider: AuthorizationServerApp, exchangeable_by: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": "okta_user",
        "grant_type": "client_credentials",
        "client_id": "user-app",
        "client_secret": "tk-secret",
        "token_url": provider.token_url,
        "scopes": "read",
        "exchangeable_by": list(exchangeable_by),
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
    call(celery_client, "tokenkeeper.create_integration", _subject(provider, ("downstream",)), timeout=20)
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
    assert "no integration named 'nobody' lets 'x'" in caught.value.errors["subject_integration"][0]
    registry.create(_subject(provider, ("a", "c")))
    registry.create({**_exchange(provider, "a", subject_integration="okta_user"), "exchangeable_by": ["b"]})
    registry.create({**_exchange(provider, "b", subject_integration="a"), "exchangeable_by": ["a"]})
    with pytest.raises(SpecError) as caught:
        registry.update("a", {"subject_integration": "b"})
    assert "a -> b -> a" in caught.value.errors["subject_integration"][0]
    with pytest.raises(SpecError) as caught:
        registry.create(_exchange(provider, "c", subject_integration="okta_user", subject_token="t"))
    assert "exactly one" in caught.value.errors["subject_token"][0]
    assert not redis_client.exists("tokenkeeper:integration:x", "tokenkeeper:integration:c")


def test_an_integration_not_named_by_the_subject_cannot_exchange_its_token(
    provider: AuthorizationServerApp, runtime: Any, token_server: Any, redis_client: Any
) -> None:
    """A producer naming someone else's integration as its subject, with its own token endpoint: refused at
    creation with the same words as for a name that does not exist, and the endpoint never sees the token."""
    registry = Registry(runtime)
    registry.create(_subject(provider, exchangeable_by=("downstream",)))
    thief = {**_exchange(provider, "thief", subject_integration="okta_user"), "token_url": token_server.url}
    with pytest.raises(SpecError) as caught:
        registry.create(thief)
    assert caught.value.errors["subject_integration"] == [
        "no integration named 'okta_user' lets 'thief' exchange its token (see its exchangeable_by)"
    ]
    assert token_server.bodies == [] and not redis_client.exists("tokenkeeper:integration:thief")
    # Allowed once, then withdrawn: the next exchange is refused before anything is sent.
    registry.update("okta_user", {"exchangeable_by": ["downstream", "thief"]})
    registry.create({**thief, "token_url": provider.token_url})
    sent = len(provider.state.exchanged)
    registry.update("okta_user", {"exchangeable_by": ["downstream"]})
    assert Refresher(runtime).refresh("thief").status == "needs_reauth"
    assert len(provider.state.exchanged) == sent
    assert "lets 'thief'" in redis_client.hget("tokenkeeper:integration:thief", "reason")


def test_a_refused_update_leaves_every_link_as_it_was(
    provider: AuthorizationServerApp, runtime: Any, redis_client: Any
) -> None:
    """An update to a new subject that the provider refuses changes neither subject's list of dependents."""
    registry = Registry(runtime)
    registry.create(_subject(provider, exchangeable_by=("a",)))
    registry.create({**_subject(provider, exchangeable_by=("a",)), "name": "other_user"})
    registry.create(_exchange(provider, "a", subject_integration="okta_user"))
    with pytest.raises(ProviderError):
        registry.update("a", {"subject_integration": "other_user", "client_secret": "wrong"})
    assert redis_client.hget("tokenkeeper:integration:okta_user", "dependents") == '["a"]'
    assert redis_client.hget("tokenkeeper:integration:other_user", "dependents") is None


def test_an_exchange_under_way_when_its_subject_changes_is_due_again_once_written(
    provider: AuthorizationServerApp, runtime: Any, redis_client: Any
) -> None:
    """The subject gets a new token while the exchange holds the old one: its write does not push the follow-up
    to its own plan (it is due at once), and a loop of follows is held to the minimum interval."""
    from workers.engine.guarded import Answer, write_answers
    from workers.engine.outcomes import Change

    registry = Registry(runtime)
    registry.create(_subject(provider, exchangeable_by=("downstream",)))
    registry.create(_exchange(provider, "downstream", subject_integration="okta_user"))
    store, now = runtime.store, runtime.clock()
    lock, record = store.acquire_and_load("downstream", 30, now)
    assert lock is not None and record is not None
    # Meanwhile the subject is refreshed: the dependent is marked due (its last refresh was just now, so the
    # minimum interval decides when).
    assert store.follow(["downstream"], now + 0.5, 0.0) == 1
    plan = now + 3600.0
    change = Change(fields={"refresh_at": plan}, token={"status": "active"}, history={}, due=plan)
    write_answers(runtime, [Answer(lock, record, change, started=now)], release=True)
    due = redis_client.zscore("tokenkeeper:schedule", "downstream")
    assert (
        due == pytest.approx(now + 0.5)
        and float(redis_client.hget("tokenkeeper:integration:downstream", "refresh_at")) == due
    )
    # A write that began after the follow keeps its own plan.
    lock, record = store.acquire_and_load("downstream", 30, now + 1)
    assert lock is not None and record is not None
    write_answers(runtime, [Answer(lock, record, change, started=now + 1)], release=True)
    assert redis_client.zscore("tokenkeeper:schedule", "downstream") == pytest.approx(plan)
    # Followed right after its own refresh: not sooner than the minimum interval allows.
    redis_client.hset("tokenkeeper:integration:downstream", "refreshed_at", repr(now + 2))
    store.follow(["downstream"], now + 2, 30.0)
    assert redis_client.zscore("tokenkeeper:schedule", "downstream") == pytest.approx(now + 32)
