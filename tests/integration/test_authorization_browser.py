"""Authorization Code end to end: headless Chromium, an Authlib authorization server, our callback app,
a real worker and beat; then the token is kept fresh with rotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.authorization_server import PASSWORD, SUBJECTS, USERNAME, USERS, AuthorizationServerApp
from tests.support.processes import wait_until
from tests.support.web import Gunicorn
from workers.engine.links import authorization_link
from workers.producer import call

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider() -> Iterator[AuthorizationServerApp]:
    server = AuthorizationServerApp(lifetime=4).start()
    yield server
    server.stop()


def consent(
    browser,
    start_url: str,
    ours: str,
    allow: bool = True,
    user: str = USERNAME,
    provider: AuthorizationServerApp | None = None,
) -> str:
    """Log in at the provider as ``user`` and answer its consent page; return the heading of our page we land on.

    With ``provider``, its session is ended first, so the login form is shown again.
    """
    wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException, NoSuchElementException])
    if provider is not None:
        browser.get(f"{provider.base_url}/logout")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "signed-out")))
    browser.get(start_url)
    wait.until(expected_conditions.presence_of_element_located((By.ID, "username"))).send_keys(user)
    browser.find_element(By.ID, "password").send_keys(USERS.get(user, PASSWORD))
    browser.find_element(By.ID, "login").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "allow")))
    browser.find_element(By.ID, "allow" if allow else "deny").click()
    wait.until(lambda driver: driver.current_url.startswith(ours) and driver.find_element(By.TAG_NAME, "h1").text)
    return browser.find_element(By.TAG_NAME, "h1").text


def test_a_user_connects_in_a_browser_and_the_token_stays_fresh(
    provider: AuthorizationServerApp,
    web: Gunicorn,
    browser,
    start_processes,
    celery_client,
    settings,
    redis_client,
    tmp_path: Path,
) -> None:
    """Authorize → login → consent → callback → success page; then at least two rotations, no reuse."""
    start_processes("worker")
    start_processes("beat")
    provider.register_client(settings.callback_url)
    created = call(
        celery_client,
        "tokenkeeper.create_integration",
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "tk-client",
            "client_secret": "tk-secret",
            "auth_url": f"{provider.base_url}/authorize?prompt=consent",
            "token_url": f"{provider.base_url}/token",
            "scopes": "profile",
        },
        timeout=20,
    )
    assert created["status"] == "pending_authorization"

    heading = consent(browser, created["authorization_url"], settings.public_url)
    browser.save_screenshot(str(tmp_path / "connected.png"))
    page = browser.page_source
    assert heading == "Connected", page
    assert "profile" in page and "seconds" in page
    token = redis_client.hgetall("tokenkeeper:token:drive")
    assert token["status"] == "active" and provider.is_valid(token["access_token"])
    assert token["access_token"] not in page

    wait_until(lambda: provider.state.refreshes >= 2, 30, "two refreshes by the engine", 0.2)
    latest = redis_client.hgetall("tokenkeeper:token:drive")
    assert latest["access_token"] != token["access_token"] and provider.is_valid(latest["access_token"])
    assert provider.state.reused == []
    assert provider.state.exchanges == 1
    gunicorn_log = web.output()
    for code in provider.state.codes:  # none left: each was exchanged and deleted
        assert code not in gunicorn_log


def test_declining_consent_is_shown_plainly_and_changes_nothing(
    provider: AuthorizationServerApp,
    web: Gunicorn,
    browser,
    start_processes,
    celery_client,
    settings,
    redis_client,
) -> None:
    """Deny at the provider: our page says access was not granted; the integration stays pending."""
    start_processes("worker")
    provider.register_client(settings.callback_url)
    created = call(
        celery_client,
        "tokenkeeper.create_integration",
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "tk-client",
            "client_secret": "tk-secret",
            "auth_url": f"{provider.base_url}/authorize",
            "token_url": f"{provider.base_url}/token",
        },
        timeout=20,
    )
    heading = consent(browser, created["authorization_url"], settings.public_url, allow=False)
    assert heading == "Authorization did not complete"
    assert "declined" in browser.page_source and "access_denied" in browser.page_source
    assert redis_client.hget("tokenkeeper:token:drive", "status") == "pending_authorization"


def test_reauthorizing_with_another_account_is_refused_unless_the_link_allows_it(
    provider: AuthorizationServerApp,
    web: Gunicorn,
    browser,
    start_processes,
    celery_client,
    settings,
    redis_client,
    process_env,
) -> None:
    """alice connects; bob consenting through a plain link is refused and alice's tokens stay; a
    --new-account link lets bob connect; the account is recorded and shown by ``show``."""
    import json
    import subprocess
    import sys
    import time

    from tests.support.processes import ROOT

    start_processes("worker")
    provider.register_client(settings.callback_url)
    created = call(
        celery_client,
        "tokenkeeper.create_integration",
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "tk-client",
            "client_secret": "tk-secret",
            "auth_url": f"{provider.base_url}/authorize",
            "token_url": f"{provider.base_url}/token",
            "scopes": "openid email",
        },
        timeout=20,
    )

    def holder() -> str:
        access = redis_client.hget("tokenkeeper:token:drive", "access_token")
        return next(token.user for token in provider.state.tokens if token.access_token == access)

    def account() -> dict[str, str]:
        return json.loads(redis_client.hget("tokenkeeper:integration:drive", "account") or "{}")

    assert consent(browser, created["authorization_url"], settings.public_url, user="alice") == "Connected"
    assert holder() == "alice" and account()["sub"] == SUBJECTS["alice"]

    heading = consent(
        browser,
        authorization_link(settings, "drive", now=time.time()),
        settings.public_url,
        user="bob",
        provider=provider,
    )
    assert heading == "Authorization did not complete"
    assert "different account" in browser.page_source
    assert holder() == "alice" and account()["sub"] == SUBJECTS["alice"]
    assert provider.state.exchanges == 2

    heading = consent(
        browser,
        authorization_link(settings, "drive", now=time.time(), new_account=True),
        settings.public_url,
        user="bob",
        provider=provider,
    )
    assert heading == "Connected", browser.page_source
    assert holder() == "bob"
    assert account() == {"iss": provider.base_url, "sub": SUBJECTS["bob"], "email": "bob@example.com", "name": "Bob"}
    shown = subprocess.run(
        [sys.executable, "-m", "workers.cli", "show", "drive"],
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(shown.stdout)["account"]["sub"] == SUBJECTS["bob"]
    reasons = " ".join(entry["reason"] for entry in json.loads(shown.stdout)["history"])
    assert SUBJECTS["bob"] in reasons and "refused" in reasons
