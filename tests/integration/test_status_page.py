"""The operators' status page in headless Chromium, and /metrics, against a real worker and gunicorn."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.processes import CeleryProcess, wait_until
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from tests.support.web import Gunicorn
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime

pytestmark = pytest.mark.e2e

OPERATOR = ("ops", "correct-horse-battery")
# The badge colours of style.css: each must show up in the screenshot.
BADGES = {
    "active": (0x1A, 0x7F, 0x37),
    "retrying": (0xB3, 0x59, 0x00),
    "needs_reauth": (0xCF, 0x22, 0x2E),
    "pending_authorization": (0x09, 0x69, 0xDA),
}


@pytest.fixture
def operator_env(environ: dict[str, str]) -> None:
    environ["TOKENKEEPER_OPERATOR_USER"], environ["TOKENKEEPER_OPERATOR_PASSWORD"] = OPERATOR


@pytest.fixture
def web(operator_env: None, web: Gunicorn) -> Gunicorn:
    # The operator's password must be in the environment before gunicorn starts.
    return web


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    # Five-minute tokens: the rows' "expires in" and "next refresh" stay in the future however slow the run.
    server = TokenServer(lifetime=300).start()
    yield server
    server.stop()


def _four_states(runtime: Runtime, server: TokenServer) -> None:
    registry, refresher = Registry(runtime), Refresher(runtime)
    registry.create(cc_spec(server, "billing_api"))
    registry.create(rt_spec(server, "crm"))
    server.queue(Canned(status=503, body=b"down for maintenance", headers={"Retry-After": "120"}))
    refresher.refresh("crm")
    registry.create(rt_spec(server, "old_sync"))
    server.queue(
        Canned(
            status=400,
            body=b'{"error": "invalid_grant", "error_description": "token revoked"}',
            headers={"Content-Type": "application/json"},
        )
    )
    refresher.refresh("old_sync")
    registry.create(
        {
            "name": "team_dropbox",
            "provider": "dropbox",
            "client_id": "app-key",
            "client_secret": "app-secret",
            "scopes": "files.content.read",
        }
    )


def _colour_present(image: Image.Image, colour: tuple[int, int, int]) -> int:
    return sum(count for count, pixel in image.getcolors(maxcolors=1 << 20) or [] if pixel[:3] == colour)


# Beside the four states: enough integrations for a second page of 100 (and part of a third).
SERVICES = 250
DASH = "\N{EN DASH}"


def _rows(browser) -> list[str]:
    return [row.get_attribute("data-name") for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]


def _submit(browser, **choices: str) -> None:
    """Fill the filter form as a person does (typing, picking from the lists) and press Show."""
    search = browser.find_element(By.ID, "q")
    search.clear()
    search.send_keys(choices.pop("q", ""))
    for field, value in choices.items():
        Select(browser.find_element(By.ID, field)).select_by_value(value)
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, "show").click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(old))


def _follow(browser, element) -> None:
    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(old))


def test_the_status_page_searches_filters_pages_and_refreshes_in_a_browser(
    operator_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    web: Gunicorn,
    browser,
    start_processes: Callable[..., CeleryProcess],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """In headless Chromium with the operator's login: the counts lead with those needing a person; rows
    in name order with grant, status, reason, expiry, last and next refresh; a name prefix with status and
    grant filters, then the next page and back; a provider filter; an integration's own page with its
    Connect link, history and last error, whose Refresh now a worker carries out; screenshots of both."""
    start_processes("worker")
    _four_states(runtime, token_server)
    created = Registry(runtime).create_many([cc_spec(token_server, f"svc_{i:03d}") for i in range(SERVICES)])
    assert all(result["status"] == "active" for result in created), created[:3]
    user, password = OPERATOR
    base = web.url.replace("http://", f"http://{user}:{password}@")

    browser.get(base + "/status")
    attention = browser.find_element(By.ID, "attention")
    assert attention.text == "Needs a person: 1 needs reauth · 1 retrying"
    assert (
        attention.find_element(By.LINK_TEXT, "1 needs reauth")
        .get_attribute("href")
        .endswith("/status?status=needs_reauth")
    )
    total = SERVICES + 4
    assert browser.find_element(By.ID, "position").text == f"1{DASH}100 of {total}, by name"
    everything = sorted(["billing_api", "crm", "old_sync", "team_dropbox", *(f"svc_{i:03d}" for i in range(SERVICES))])
    assert _rows(browser) == everything[:100]
    rows = {row.get_attribute("data-name"): row for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert {name: rows[name].get_attribute("data-status") for name in ("billing_api", "crm", "old_sync")} == {
        "billing_api": "active",
        "crm": "retrying",
        "old_sync": "needs_reauth",
    }
    assert "client credentials" in rows["billing_api"].text
    assert re.fullmatch(r"5m|4m \d+s", rows["billing_api"].find_element(By.CLASS_NAME, "expires").text)
    assert rows["billing_api"].find_element(By.CLASS_NAME, "next").text.startswith("in ")
    assert "ago" in rows["billing_api"].find_element(By.CLASS_NAME, "last").text
    assert "HTTP 503" in rows["crm"].text and "token revoked" in rows["old_sync"].text
    assert re.search(r"retry 1 at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", rows["crm"].text)
    png = browser.get_screenshot_as_png()
    (tmp_path / "status-list.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size[0] >= 800
    for status, colour in BADGES.items():
        assert _colour_present(image, colour) > 50, f"no {status} badge in the screenshot"

    # A prefix with two filters, as typed and picked; then the next page, and back.
    _submit(browser, q="svc_", status="active", grant="client_credentials")
    assert "q=svc_" in browser.current_url and "status=active" in browser.current_url
    assert _rows(browser) == [f"svc_{i:03d}" for i in range(100)]
    assert browser.find_element(By.ID, "position").text == f"1{DASH}100 of {SERVICES} matching, by name"
    _follow(browser, browser.find_element(By.ID, "next"))
    assert _rows(browser) == [f"svc_{i:03d}" for i in range(100, 200)]
    assert browser.find_element(By.ID, "position").text == f"101{DASH}200 of {SERVICES} matching, by name"
    assert Select(browser.find_element(By.ID, "status")).first_selected_option.get_attribute("value") == "active"
    _follow(browser, browser.find_element(By.ID, "previous"))
    assert _rows(browser) == [f"svc_{i:03d}" for i in range(100)]
    _submit(browser, q="", status="", grant="", provider="dropbox")
    assert _rows(browser) == ["team_dropbox"]
    assert "Dropbox" in browser.find_element(By.CSS_SELECTOR, 'tr[data-name="team_dropbox"]').text

    # The integration's own page: Connect is a signed link; nothing to refresh before consent.
    _follow(browser, browser.find_element(By.LINK_TEXT, "team_dropbox"))
    assert browser.find_element(By.ID, "name").text.startswith("team_dropbox")
    connect = browser.find_element(By.ID, "connect")
    assert connect.text == "Connect" and "/oauth/authorize/team_dropbox?t=" in connect.get_attribute("href")
    assert browser.find_elements(By.ID, "refresh") == []

    _follow(browser, browser.find_element(By.ID, "back"))
    _submit(browser, q="crm")
    _follow(browser, browser.find_element(By.LINK_TEXT, "crm"))
    history = [row.get_attribute("data-status") for row in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
    assert history == ["retrying", "active"]
    assert browser.find_element(By.ID, "last-error").text == "http_503"
    assert browser.find_element(By.ID, "attempts").text == "1"
    # The provider asked for 120 s of quiet (Retry-After): a refresh now would wait for it, so the page says so.
    assert "retry 1 at" in browser.find_element(By.ID, "reason").text
    assert browser.find_elements(By.ID, "refresh") == []
    assert browser.find_element(By.ID, "waiting").text.startswith("The next attempt is at ")
    browser.set_window_size(1000, 1200)  # the history too
    (tmp_path / "status-integration.png").write_bytes(browser.get_screenshot_as_png())

    browser.get(base + "/status/billing_api")
    before = redis_client.hget("tokenkeeper:token:billing_api", "access_token")
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("tokenkeeper:events:billing_api")
    _follow(browser, browser.find_element(By.ID, "refresh"))
    assert "A refresh of billing_api is queued" in browser.find_element(By.ID, "queued").text
    assert _next_message(pubsub, 20) is not None, "the refresh was not carried out"
    pubsub.close()
    assert redis_client.hget("tokenkeeper:token:billing_api", "access_token") != before
    browser.get(base + "/status/billing_api")
    assert browser.find_element(By.ID, "status").text == "active"
    assert browser.find_element(By.ID, "last").text.endswith("s ago)")


def test_the_status_page_needs_the_operator_and_a_form_from_itself(
    operator_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    web: Gunicorn,
) -> None:
    """No or wrong credentials: 401; a POST without the page's form token: 400 and nothing queued."""
    Registry(runtime).create(cc_spec(token_server, "billing_api"))
    for path in ("/status", "/status/billing_api"):
        for auth in (None, ("ops", "wrong"), ("admin", OPERATOR[1])):
            request = urllib.request.Request(web.url + path)
            if auth:
                request.add_header("Authorization", _basic(*auth))
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=5)
            assert caught.value.code == 401
    forged = urllib.request.Request(web.url + "/status/refresh/billing_api", data=b"token=guess", method="POST")
    forged.add_header("Authorization", _basic(*OPERATOR))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(forged, timeout=5)
    assert caught.value.code == 400 and b"reload the page" in caught.value.read()


def test_connect_is_a_valid_link_and_the_connected_account_is_shown(
    operator_env: None,
    settings,
    runtime: Runtime,
    redis_client: redis.Redis,
    make_client,
) -> None:
    """The integration's page carries Reconnect, a signed link for it (it redirects to the provider), and
    shows the account that consented, as its row in the list does."""
    from urllib.parse import parse_qs, urlsplit

    from workers.engine.links import LinkSigner

    Registry(runtime).create(
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "a",
            "client_secret": "b",
            "token_url": "https://idp.example/token",
            "auth_url": "https://idp.example/auth",
        }
    )
    redis_client.hset(
        "tokenkeeper:integration:drive",
        mapping={"status": "needs_reauth", "account": json.dumps({"sub": "1234", "email": "alice@example.com"})},
    )
    client = make_client(settings)
    auth = {"Authorization": _basic(*OPERATOR)}
    assert "alice@example.com (sub 1234)" in client.get("/status", headers=auth).get_data(as_text=True)
    page = client.get("/status/drive", headers=auth).get_data(as_text=True)
    assert re.search(r'<dd id="account">alice@example.com \(sub 1234\)</dd>', page)
    href = re.search(r'href="([^"]*/oauth/authorize/drive\?t=[^"]*)"[^>]*>Reconnect<', page).group(1)
    href = href.replace("&amp;", "&")
    token = parse_qs(urlsplit(href).query)["t"][0]
    link = LinkSigner(settings.secret_keys).verify(token, "drive", time.time())
    assert not link.new_account and abs(link.expires_at - time.time() - settings.authorize_link_ttl) < 60
    assert client.get(href).status_code == 302


def test_an_attempt_that_died_after_sending_its_refresh_token_is_shown(
    operator_env: None, settings, runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis, make_client
) -> None:
    """A journal entry left past its lock (its refresher died mid-request) shows on the row and on the
    integration's page with the token's fingerprint and the time, and nothing of the token itself."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    since = time.time() - 60
    entry = {"owner": "gone", "since": since, "until": since + 10, "fp": "0123456789ab"}
    redis_client.hset("tokenkeeper:integration:user", "attempt", json.dumps(entry))
    client = make_client(settings)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    for path, tag in (("/status", "small"), ("/status/user", "dd")):
        page = client.get(path, headers={"Authorization": _basic(*OPERATOR)}).get_data(as_text=True)
        line = re.search(rf'<{tag} class="lost-attempt"[^>]*>([^<]*)</{tag}>', page)
        assert line is not None and "#0123456789ab" in line.group(1) and stamp in line.group(1), path
        assert not any(token in page for token in token_server.live_refresh)


def test_the_default_view_leads_with_the_integrations_needing_a_person(
    operator_env: None, settings, runtime: Runtime, token_server: TokenServer, make_client
) -> None:
    """However many integrations, the first page says how many need re-authorization or are retrying and
    links to each list; the list itself is in name order; counts by status, grant and provider fill the
    filters; an integration that needs nothing has no such line."""
    _four_states(runtime, token_server)
    client = make_client(settings)
    auth = {"Authorization": _basic(*OPERATOR)}
    page = client.get("/status", headers=auth).get_data(as_text=True)
    assert re.search(
        r'Needs a person: <a href="\?status=needs_reauth">1 needs reauth</a> · '
        r'<a href="\?status=retrying">1 retrying</a>',
        page,
    )
    assert re.findall(r'<tr data-name="([^"]+)"', page) == ["billing_api", "crm", "old_sync", "team_dropbox"]
    assert '<option value="client_credentials">client credentials (1)</option>' in page
    assert (
        '<option value="dropbox">Dropbox (1)</option>' in page and '<option value="none">no preset (3)</option>' in page
    )
    stopped = client.get("/status?status=needs_reauth", headers=auth).get_data(as_text=True)
    assert re.findall(r'<tr data-name="([^"]+)"', stopped) == ["old_sync"]
    assert '<option value="needs_reauth" selected>' in stopped
    Registry(runtime).delete("old_sync")
    Registry(runtime).delete("crm")
    calm = client.get("/status", headers=auth).get_data(as_text=True)
    assert 'id="attention"' not in calm


def test_no_secret_reaches_any_page(
    operator_env: None, settings, runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis, make_client
) -> None:
    """Integrations seeded with known client secrets and refresh tokens: neither those, nor the access
    tokens the provider issued, nor the sealed secrets appear on the list, a filtered list, a search, or
    any integration's page."""
    secrets = {"client-secret-KNOWN-7f3a", "refresh-token-KNOWN-91bd"}
    token_server.clients["client-id"] = "client-secret-KNOWN-7f3a"
    registry = Registry(runtime)
    registry.create(cc_spec(token_server, "billing_api", client_secret="client-secret-KNOWN-7f3a"))
    token_server.live_refresh["refresh-token-KNOWN-91bd"] = "client-id"
    registry.create(
        rt_spec(token_server, "crm", client_secret="client-secret-KNOWN-7f3a", refresh_token="refresh-token-KNOWN-91bd")
    )
    registry.create(
        {"name": "team_dropbox", "provider": "dropbox", "client_id": "k", "client_secret": "client-secret-KNOWN-7f3a"}
    )
    for name in ("billing_api", "crm", "team_dropbox"):
        record = redis_client.hgetall(f"tokenkeeper:integration:{name}")
        secrets.add(record["secrets"])
        if access := redis_client.hget(f"tokenkeeper:token:{name}", "access_token"):
            secrets.add(access)
    secrets |= set(token_server.live_refresh)
    client = make_client(settings)
    auth = {"Authorization": _basic(*OPERATOR)}
    paths = [
        "/status",
        "/status?q=crm",
        "/status?grant=refresh_token",
        "/status?provider=dropbox",
        "/status/billing_api",
        "/status/crm",
        "/status/team_dropbox",
    ]
    for path in paths:
        response = client.get(path, headers=auth)
        assert response.status_code == 200, path
        page = response.get_data(as_text=True)
        leaked = [secret for secret in secrets if secret and secret in page]
        assert leaked == [], (path, leaked)
    assert "client_id" in client.get("/status/crm", headers=auth).get_data(as_text=True)


def test_what_a_page_shows_is_escaped_and_bad_input_is_named(
    operator_env: None, settings, runtime: Runtime, token_server: TokenServer, make_client
) -> None:
    """A provider's error text with markup is shown as text on the list and the integration's page; a
    search or filter that cannot be used answers 400 with the list and a line naming what was wrong
    (escaped too); an unknown integration is a 404 that names it, escaped."""
    registry = Registry(runtime)
    registry.create(rt_spec(token_server, "crm"))
    token_server.queue(
        Canned(
            status=400,
            body=b'{"error": "invalid_grant", "error_description": "<img src=x onerror=alert(1)>"}',
            headers={"Content-Type": "application/json"},
        )
    )
    Refresher(runtime).refresh("crm")
    client = make_client(settings)
    auth = {"Authorization": _basic(*OPERATOR)}
    for path in ("/status", "/status/crm"):
        page = client.get(path, headers=auth).get_data(as_text=True)
        assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page, path
    bad = client.get("/status?q=<b>x</b>&status=broken&grant=magic&provider=nowhere", headers=auth)
    text = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "<b>x" not in text
    problem = re.search(r'<p class="problem" role="alert" id="problem">([^<]*)</p>', text).group(1)
    assert "prefix &#39;&lt;b&gt;x&lt;/b&gt;&#39;: names have only letters, digits, _ and -" in problem
    assert "status &#39;broken&#39;: use one of pending_authorization, active, retrying, needs_reauth" in problem
    assert "grant &#39;magic&#39;" in problem and "provider &#39;nowhere&#39;" in problem
    assert re.findall(r'<tr data-name="([^"]+)"', text) == ["crm"]
    missing = client.get("/status/<script>", headers=auth)
    assert missing.status_code == 404 and "<script>" not in missing.get_data(as_text=True)
    assert "There is no integration named &#39;&lt;script&gt;&#39;" in missing.get_data(as_text=True)


def test_metrics_count_refreshes_and_integrations_by_status(
    operator_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    web: Gunicorn,
) -> None:
    """/metrics in Prometheus text: outcomes, duration and lateness histograms, integrations by status."""
    from prometheus_client.parser import text_string_to_metric_families

    _four_states(runtime, token_server)
    refresher = Refresher(runtime)
    plan = runtime.store.load("billing_api").refresh_at  # type: ignore[union-attr]
    assert refresher.refresh("billing_api", planned_at=plan).outcome == "refreshed"
    assert refresher.refresh("billing_api").outcome == "refreshed"
    scrape = urllib.request.Request(web.url + "/metrics", headers={"Authorization": _basic(*OPERATOR)})
    with urllib.request.urlopen(scrape, timeout=5) as response:
        text = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("tokenkeeper_refreshes_total", (("outcome", "refreshed"),))] == 2
    assert samples[("tokenkeeper_refreshes_total", (("outcome", "retrying"),))] == 1
    assert samples[("tokenkeeper_refreshes_total", (("outcome", "needs_reauth"),))] == 1
    assert samples[("tokenkeeper_refresh_duration_seconds_count", ())] == 4
    assert samples[("tokenkeeper_refresh_lateness_seconds_count", ())] == 1  # only the scheduled one
    for status, count in {"active": 1, "retrying": 1, "needs_reauth": 1, "pending_authorization": 1}.items():
        assert samples[("tokenkeeper_integrations", (("status", status),))] == count


def test_token_age_at_read_is_measured_by_the_python_helper(runtime: Runtime, token_server: TokenServer) -> None:
    """Each read through TokenReader adds one sample to tokenkeeper_token_age_at_read_seconds."""
    from prometheus_client import REGISTRY

    from workers.consumer import TokenReader

    Registry(runtime).create(cc_spec(token_server, "billing_api"))
    reader = TokenReader(runtime.store.redis, clock=lambda: runtime.clock() + 42)

    def count() -> float:
        return REGISTRY.get_sample_value("tokenkeeper_token_age_at_read_seconds_count") or 0

    before = count()
    reader.read("billing_api")
    reader.read_many(["billing_api", "billing_api"])
    assert count() == before + 2
    assert REGISTRY.get_sample_value("tokenkeeper_token_age_at_read_seconds_bucket", {"le": "60.0"}) >= 2


def _next_message(pubsub: redis.client.PubSub, timeout: float) -> object:
    # get_message answers None for the subscription's own confirmation too.
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if message is not None:
            return message
    return None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def json_logs(environ: dict[str, str]) -> None:
    environ["TOKENKEEPER_LOG_FORMAT"] = "json"


def test_json_logs_have_one_line_per_refresh(
    json_logs: None,
    runtime: Runtime,
    token_server: TokenServer,
    start_processes: Callable[..., CeleryProcess],
    log_dir: Path,
    celery_client,
) -> None:
    """TOKENKEEPER_LOG_FORMAT=json: the worker logs each refresh as an object with name, outcome,
    duration and lateness; the scheduling tick's routine lines are left out."""
    from workers.producer import call

    worker = start_processes("worker")
    beat = start_processes("beat")
    Registry(runtime).create(cc_spec(token_server, "billing_api"))
    plan = runtime.store.load("billing_api").refresh_at  # type: ignore[union-attr]
    call(celery_client, "tokenkeeper.refresh_integration", "billing_api", plan, timeout=20)
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    refreshes = [line for line in lines if line.get("integration") == "billing_api"]
    assert len(refreshes) == 1, worker.output()
    line = refreshes[0]
    assert line["outcome"] == "refreshed" and line["level"] == "INFO"
    assert 0 < line["duration"] < 5 and isinstance(line["lateness"], float)
    assert "refresh billing_api: refreshed in" in line["message"]
    wait_until(lambda: runtime.store.last_tick() is not None, 20, "a scheduling tick")
    for process in (worker, beat):
        # (The startup banner lists the task names; log lines must not mention the tick.)
        logged = [json.loads(line)["message"] for line in process.output().splitlines() if line.startswith("{")]
        assert logged and not [m for m in logged if "schedule_refreshes" in m or "schedule-refreshes" in m]


@pytest.mark.parametrize(
    "credentials",
    [
        base64.b64encode("admin:pässwörd".encode()),  # UTF-8, not ASCII
        base64.b64encode("ops:correct-horse-battery-é".encode("latin-1")),  # not even UTF-8
        base64.b64encode(b"\xff\xfe:\x80\x81"),
        b"not base64 at all \xe9",
    ],
)
def test_non_ascii_or_garbled_basic_credentials_are_a_401(
    operator_env: None, settings, credentials: bytes, make_client
) -> None:
    """Basic credentials that are not ASCII, not UTF-8 or not base64 are refused with 401, never a 500."""
    client = make_client(settings)
    for path in ("/status", "/metrics"):
        response = client.get(path, headers=[("Authorization", (b"Basic " + credentials).decode("latin-1"))])
        assert response.status_code == 401, (path, response.status_code)


def test_a_non_ascii_operator_password_works(environ: dict[str, str], make_client) -> None:
    """An operator password with non-ASCII characters is accepted when sent as UTF-8."""
    from config import load_settings

    settings = load_settings(
        {**environ, "TOKENKEEPER_OPERATOR_USER": "ops", "TOKENKEEPER_OPERATOR_PASSWORD": "pässwörd"}
    )
    client = make_client(settings)
    good = "Basic " + base64.b64encode("ops:pässwörd".encode()).decode()
    assert client.get("/status", headers={"Authorization": good}).status_code == 200
    assert client.get("/status", headers={"Authorization": _basic("ops", "passwort")}).status_code == 401


def test_metrics_need_the_operator_unless_made_public(environ: dict[str, str], make_client) -> None:
    """/metrics is behind the operator login; TOKENKEEPER_METRICS_PUBLIC=true opens it to a scraper."""
    from config import load_settings

    operator = {"TOKENKEEPER_OPERATOR_USER": OPERATOR[0], "TOKENKEEPER_OPERATOR_PASSWORD": OPERATOR[1]}
    client = make_client(load_settings({**environ, **operator}))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": _basic("ops", "wrong")}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": _basic(*OPERATOR)}).status_code == 200
    public = make_client(load_settings({**environ, **operator, "TOKENKEEPER_METRICS_PUBLIC": "true"}))
    assert public.get("/metrics").status_code == 200
    assert public.get("/status").status_code == 401  # only the metrics are opened
