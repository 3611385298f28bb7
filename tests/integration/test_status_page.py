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


def test_the_status_page_shows_every_integration_and_refreshes_on_request(
    operator_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    web: Gunicorn,
    browser,
    start_processes: Callable[..., CeleryProcess],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """Rows with grant, status, reason, expiry, last and next refresh; Connect for authorization code;
    Refresh now queues a refresh that a worker carries out; the screenshot shows all four badges."""
    start_processes("worker")
    _four_states(runtime, token_server)
    user, password = OPERATOR
    base = web.url.replace("http://", f"http://{user}:{password}@")
    browser.get(base + "/status")
    ordered = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    # Those needing a person first: stopped, retrying, waiting for consent, then the healthy ones.
    assert [row.get_attribute("data-name") for row in ordered] == ["old_sync", "crm", "team_dropbox", "billing_api"]
    rows = {row.get_attribute("data-name"): row for row in ordered}
    assert {name: row.get_attribute("data-status") for name, row in rows.items()} == {
        "billing_api": "active",
        "crm": "retrying",
        "old_sync": "needs_reauth",
        "team_dropbox": "pending_authorization",
    }
    assert "client credentials" in rows["billing_api"].text
    assert re.fullmatch(r"5m|4m \d+s", rows["billing_api"].find_element(By.CLASS_NAME, "expires").text)
    assert rows["billing_api"].find_element(By.CLASS_NAME, "next").text.startswith("in ")
    assert "ago" in rows["billing_api"].find_element(By.CLASS_NAME, "last").text
    assert "HTTP 503" in rows["crm"].text and "token revoked" in rows["old_sync"].text
    assert re.search(r"retry 1 at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", rows["crm"].text)
    assert "Dropbox" in rows["team_dropbox"].text
    connect = rows["team_dropbox"].find_element(By.LINK_TEXT, "Connect")
    # A signed link of the default lifetime: following it starts a consent flow.
    assert "/oauth/authorize/team_dropbox?t=" in connect.get_attribute("href")
    assert rows["team_dropbox"].find_elements(By.TAG_NAME, "button") == []
    page = browser.page_source
    for token in redis_client.keys("tokenkeeper:token:*"):
        access = redis_client.hget(token, "access_token")
        assert not access or access not in page

    png = browser.get_screenshot_as_png()
    browser.get(base + "/status?status=retrying")
    assert [row.get_attribute("data-name") for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")] == ["crm"]
    browser.get(base + "/status")
    (tmp_path / "status.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size[0] >= 800
    for status, colour in BADGES.items():
        assert _colour_present(image, colour) > 50, f"no {status} badge in the screenshot"

    before = redis_client.hget("tokenkeeper:token:billing_api", "access_token")
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("tokenkeeper:events:billing_api")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-name="billing_api"] button').click()
    # The click submits a form; the answer is a new page, which WebDriver does not wait for by itself.
    queued = WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "queued"))
    assert "billing_api" in queued[0].text
    assert _next_message(pubsub, 20) is not None, "the refresh was not carried out"
    pubsub.close()
    assert redis_client.hget("tokenkeeper:token:billing_api", "access_token") != before


def test_the_status_page_needs_the_operator_and_a_form_from_itself(
    operator_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    web: Gunicorn,
) -> None:
    """No or wrong credentials: 401; a POST without the page's form token: 400 and nothing queued."""
    Registry(runtime).create(cc_spec(token_server, "billing_api"))
    for auth in (None, ("ops", "wrong"), ("admin", OPERATOR[1])):
        request = urllib.request.Request(web.url + "/status")
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
    """Reconnect carries a signed link for that integration (it redirects to the provider); the row shows
    the account that consented."""
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
    page = client.get("/status", headers={"Authorization": _basic(*OPERATOR)}).get_data(as_text=True)
    assert "alice@example.com (sub 1234)" in page
    href = re.search(r'href="([^"]*/oauth/authorize/drive\?t=[^"]*)"[^>]*>Reconnect<', page).group(1)
    href = href.replace("&amp;", "&")
    token = parse_qs(urlsplit(href).query)["t"][0]
    link = LinkSigner(settings.secret_keys).verify(token, "drive", time.time())
    assert not link.new_account and abs(link.expires_at - time.time() - settings.authorize_link_ttl) < 60
    assert client.get(href).status_code == 302


def test_an_attempt_that_died_after_sending_its_refresh_token_is_shown(
    operator_env: None, settings, runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis, make_client
) -> None:
    """A journal entry left past its lock (its refresher died mid-request) shows on the row with the
    token's fingerprint and the time, and nothing of the token itself."""
    Registry(runtime).create(rt_spec(token_server, "user"))
    since = time.time() - 60
    entry = {"owner": "gone", "since": since, "until": since + 10, "fp": "0123456789ab"}
    redis_client.hset("tokenkeeper:integration:user", "attempt", json.dumps(entry))
    page = make_client(settings).get("/status", headers={"Authorization": _basic(*OPERATOR)}).get_data(as_text=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    line = re.search(r'<small class="lost-attempt"[^>]*>([^<]*)</small>', page)
    assert line is not None and "#0123456789ab" in line.group(1) and stamp in line.group(1)
    assert not any(token in page for token in token_server.live_refresh)


def test_a_long_list_is_cut_with_the_ones_needing_attention_first(
    operator_env: None,
    settings,
    runtime: Runtime,
    token_server: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
    make_client,
) -> None:
    """Past the page size the page says how many it shows, and the stopped integration is among them."""
    from callback_app import status

    _four_states(runtime, token_server)
    monkeypatch.setattr(status, "PAGE_ROWS", 2)
    client = make_client(settings)
    page = client.get("/status", headers={"Authorization": _basic(*OPERATOR)}).get_data(as_text=True)
    assert "Showing the first 2 of 4" in page
    assert 'data-name="old_sync"' in page and 'data-name="crm"' in page and 'data-name="billing_api"' not in page


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
