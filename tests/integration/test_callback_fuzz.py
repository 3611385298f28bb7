"""The callback app under arbitrary requests: never a 500, never a traceback, nothing changed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callback_app import create_app
from tests.support.token_server import TokenServer
from workers.registry import Registry

query_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
queries = st.dictionaries(st.sampled_from(["state", "code", "error", "error_description", "iss", "scope",
                                           "x", ""]), query_values, max_size=5)
paths = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="?#"), max_size=40)
SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.fixture
def client(settings, runtime, token_server: TokenServer):
    Registry(runtime).create({"name": "drive", "grant_type": "authorization_code", "client_id": "client-id",
                              "client_secret": "client-secret", "token_url": token_server.url,
                              "auth_url": "https://idp.example/auth"})
    return create_app(settings, runtime=runtime).test_client()


def assert_handled(response) -> None:
    assert response.status_code < 500, response.data[:300]
    assert b"Traceback" not in response.data and b"client-secret" not in response.data
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


@settings(suppress_health_check=SUPPRESS, max_examples=150, deadline=None)
@given(query=queries)
def test_the_callback_handles_any_query(client, redis_client, query: dict[str, str]) -> None:
    """Unknown states, odd errors, junk iss: each a 4xx page; the integration stays pending."""
    response = client.get("/oauth/callback", query_string=query)
    assert_handled(response)
    assert response.status_code == 400
    assert redis_client.hget("tokenkeeper:token:drive", "status") == "pending_authorization"


@settings(suppress_health_check=SUPPRESS, max_examples=150, deadline=None)
@given(name=paths)
def test_authorize_handles_any_name(client, name: str) -> None:
    """Any name: a redirect for the real one, a 404 page for the rest."""
    response = client.get("/oauth/authorize/" + name)
    assert_handled(response)


@settings(suppress_health_check=SUPPRESS, max_examples=150, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]), path=paths,
       query=queries)
def test_any_route_and_method(client, method: str, path: str, query: dict[str, str]) -> None:
    """Fuzzing every route with every method: no request gets a 500."""
    for prefix in ("/", "/oauth/", "/oauth/callback/", "/healthz/"):
        response = client.open(prefix + path, method=method, query_string=query)
        assert response.status_code < 500, (method, prefix + path, response.status_code)
