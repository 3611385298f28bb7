"""A public client (auth_method none) with PKCE, end to end against Authlib's server, which requires PKCE.

The person's side (login, consent) is played with plain HTTP requests against the provider's pages; the
browser-driven flow is in test_authorization_browser.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from tests.support.authorization_server import PASSWORD, USERNAME, AuthorizationServerApp
from workers.engine.links import link_token
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider() -> Iterator[AuthorizationServerApp]:
    server = AuthorizationServerApp(lifetime=4, require_pkce=True).start()
    yield server
    server.stop()


def _consent(provider: AuthorizationServerApp, location: str) -> dict[str, str]:
    """Sign in at the provider and allow; the query our callback is sent back with."""
    person = requests.Session()
    person.trust_env = False
    assert person.get(location, timeout=10).status_code == 200  # the sign-in form
    parts = urlsplit(location)
    next_path = f"{parts.path}?{parts.query}"
    person.post(
        f"{provider.base_url}/login",
        data={"username": USERNAME, "password": PASSWORD, "next": next_path},
        timeout=10,
    )
    answer = person.post(provider.base_url + next_path, data={"confirm": "yes"}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return dict(parse_qsl(urlsplit(answer.headers["Location"]).query))


def test_a_public_client_connects_with_pkce_and_no_secret(
    provider: AuthorizationServerApp, runtime: Any, client: Any, settings: Any, start_processes: Any, redis_client: Any
) -> None:
    """Created without a secret; the code exchange sends the PKCE verifier and no secret; refreshed twice; revoked."""
    provider.register_client(settings.callback_url, client_id="public-app", client_secret="", auth_method="none")
    start_processes("worker")
    created = Registry(runtime).create(
        {
            "name": "pub",
            "grant_type": "authorization_code",
            "client_id": "public-app",
            "auth_method": "none",
            "auth_url": f"{provider.base_url}/authorize",
            "token_url": provider.token_url,
            "revocation_url": f"{provider.base_url}/revoke",
            "scopes": "profile",
        }
    )
    assert created["status"] == "pending_authorization"
    link = f"/oauth/authorize/pub?t={link_token(settings, 'pub', now=time.time())}"
    location = client.get(link).headers["Location"]
    assert dict(parse_qsl(urlsplit(location).query))["code_challenge_method"] == "S256"
    callback = _consent(provider, location)
    page = client.get("/oauth/callback", query_string=callback)
    assert page.status_code == 200 and b"Connected" in page.data
    token = redis_client.hgetall("tokenkeeper:token:pub")
    assert token["status"] == "active" and provider.is_valid(token["access_token"])
    assert provider.state.exchanges == 1
    assert all("client_secret" not in keys for keys in provider.state.form_keys)

    refresher = Refresher(runtime)
    assert [refresher.refresh("pub").outcome for _ in range(2)] == ["refreshed", "refreshed"]
    assert provider.state.refreshes == 2 and provider.state.reused == []
    assert Registry(runtime).delete("pub")["revoked"] == ["refresh_token", "access_token"]
