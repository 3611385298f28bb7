"""The callback app under arbitrary requests: each gets the status its route promises, never a 500 or a
traceback, and nothing changes in Redis."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect
from werkzeug.test import EnvironBuilder

from tests.support.token_server import TokenServer
from workers.engine.links import link_token
from workers.engine.registry import Registry

query_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
queries = st.dictionaries(
    st.sampled_from(["state", "code", "error", "error_description", "iss", "scope", "t", "x", ""]),
    query_values,
    max_size=5,
)
paths = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="?#"), max_size=40)
SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

# What each route answers a request without credentials here: no valid link (403), no stored state (400),
# no worker running (503). The status page and metrics are off without an operator password (404).
ROUTE_STATUS = {"oauth.authorize": 403, "oauth.callback": 400, "health.healthz": 503}


@pytest.fixture(autouse=True)
def drive(runtime, token_server: TokenServer) -> None:
    """An authorization-code integration, pending consent, for the requests to aim at."""
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


def promised_status(app: Flask, method: str, path: str) -> int:
    """The status the app's route table promises for a request without credentials or a valid link."""
    environ = EnvironBuilder(path=path, method=method).get_environ()
    try:
        rule, _ = app.url_map.bind_to_environ(environ).match(return_rule=True)
    except NotFound:
        return 404
    except MethodNotAllowed:
        return 405
    except RequestRedirect as redirect:
        return redirect.code
    if rule.endpoint.startswith("status."):
        return 404
    if method == "OPTIONS":
        return 200
    return ROUTE_STATUS[rule.endpoint]


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
def test_authorize_handles_any_name(client: FlaskClient, redis_client, name: str, token: str) -> None:
    """Any name with any ``t``: a 403 page (no valid link) wherever the name routes, a 404 page where the route
    table has no match (empty, a slash, a line break); no state is stored."""
    path = "/oauth/authorize/" + name
    response = client.get(path, query_string={"t": token})
    assert_handled(response)
    assert response.status_code == promised_status(client.application, "GET", path), response.status_code
    assert list(redis_client.scan_iter("tokenkeeper:state:*")) == []


@settings(suppress_health_check=SUPPRESS, max_examples=60, deadline=None)
@given(name=st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True))
def test_authorize_with_a_valid_link_for_any_name(client, settings, name: str) -> None:
    """A valid link for a name: a redirect for the real integration, a 404 page for the rest."""
    response = client.get("/oauth/authorize/" + name, query_string={"t": link_token(settings, name, now=time.time())})
    assert_handled(response)
    assert response.status_code == (302 if name == "drive" else 404)


@settings(suppress_health_check=SUPPRESS, max_examples=150, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]), path=paths, query=queries)
def test_any_route_and_method(client: FlaskClient, redis_client, method: str, path: str, query: dict[str, str]) -> None:
    """Any path with any method: an unknown path is a 404 page, a known one with a method it does not take a 405,
    a known route answers as it promises without credentials (see ROUTE_STATUS); never a 500, nothing stored."""
    for prefix in ("/", "/oauth/", "/oauth/callback/", "/healthz/"):
        if (prefix + path).startswith("//"):
            # Werkzeug's test client reads "//x" as a host, not a path (and fails on a host like "\x80").
            continue
        response = client.open(prefix + path, method=method, query_string=query)
        promised = promised_status(client.application, method, prefix + path)
        assert response.status_code == promised, (method, prefix + path, response.status_code)
        assert response.status_code < 500 or prefix + path == "/healthz", (method, prefix + path)
    assert list(redis_client.scan_iter("tokenkeeper:state:*")) == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no-such-page", 404),
        ("GET", "/oauth/", 404),
        ("GET", "/oauth/authorize/drive", 403),
        ("GET", "/oauth/authorize/drive?t=forged", 403),
        ("GET", "/oauth/authorize/", 404),
        ("GET", "/oauth/callback", 400),
        ("GET", "/oauth/callback?state=made-up&code=c", 400),
        ("POST", "/oauth/callback", 405),
        ("DELETE", "/oauth/authorize/drive", 405),
        ("GET", "/status", 404),
        ("GET", "/metrics", 404),
    ],
)
def test_each_route_answers_as_promised(client: FlaskClient, method: str, path: str, status: int) -> None:
    """Named requests get the status ROUTE_STATUS and the route table promise, so the fuzz oracle is pinned."""
    response = client.open(path, method=method)
    assert response.status_code == status == promised_status(client.application, method, path.partition("?")[0])
    assert_handled(response)
