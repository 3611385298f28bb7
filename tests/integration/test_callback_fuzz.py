"""The callback app under arbitrary requests: never a 500, never a traceback, nothing changed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callback_app import create_app
from tests.support.token_server import TokenServer
from workers.engine.registry import Registry

query_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
queries = st.dictionaries(
    st.sampled_from(["state", "code", "error", "error_description", "iss", "scope", "t", "x", ""]),
    query_values,
    max_size=5,
)
paths = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="?#"), max_size=40)
SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.fixture
def client(settings, runtime, token_server: TokenServer):
    Registry(runtime).create(
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "client-id",
            "client_secret": "client-secret",
            "token_url": token_server.url,
            "auth_url": "https://idp.example/auth",
        }
    )
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
@given(name=paths, token=query_values)
def test_authorize_handles_any_name(client, redis_client, name: str, token: str) -> None:
    """Any name with any ``t``: a 403 page (no valid link), never a 500, and no state is stored."""
    response = client.get("/oauth/authorize/" + name, query_string={"t": token})
    assert_handled(response)
    assert response.status_code in (403, 404), response.status_code
    assert list(redis_client.scan_iter("tokenkeeper:state:*")) == []


@settings(suppress_health_check=SUPPRESS, max_examples=60, deadline=None)
@given(name=st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True))
def test_authorize_with_a_valid_link_for_any_name(client, settings, name: str) -> None:
    """A valid link for a name: a redirect for the real integration, a 404 page for the rest."""
    import time

    from workers.engine.links import link_token

    response = client.get("/oauth/authorize/" + name, query_string={"t": link_token(settings, name, now=time.time())})
    assert_handled(response)
    assert response.status_code == (302 if name == "drive" else 404)


@settings(suppress_health_check=SUPPRESS, max_examples=150, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]), path=paths, query=queries)
def test_any_route_and_method(client, method: str, path: str, query: dict[str, str]) -> None:
    """Fuzzing every route with every method: no request gets a 500."""
    for prefix in ("/", "/oauth/", "/oauth/callback/", "/healthz/"):
        response = client.open(prefix + path, method=method, query_string=query)
        assert response.status_code < 500, (method, prefix + path, response.status_code)
