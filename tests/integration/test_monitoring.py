"""The alert rules and the dashboard against a running tokenkeeper: every metric they name is served by the
callback app after real refreshes and deliveries, and the compose profile's Prometheus (a real `prometheus`,
started by the service's own start script) scrapes the callback app with the operator login, evaluates every
rule without error and answers every dashboard query."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.support.monitoring import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_SERIES,
    RULES,
    compose,
    dashboard_queries,
    exposed_names,
    localized,
    rules,
    samples,
    start_script,
)
from tests.support.ports import free_port
from tests.support.processes import CeleryProcess, wait_until
from tests.support.promql import metric_names
from tests.support.specs import cc_spec
from tests.support.token_server import TokenServer
from tests.support.web import Gunicorn
from tests.support.webhook_receiver import WebhookReceiver
from workers.engine.capacity import SAMPLE_EVERY
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime
from workers.engine.scheduler import measure_capacity
from workers.producer import call

pytestmark = pytest.mark.e2e

OPERATOR = ("ops", "monitoring-operator-password")
# Declared on /metrics but with no sample until a host's rate cap is booked and a refresh goes at its deadline.
NEEDS_A_BOOKED_RATE_CAP = {"tokenkeeper_rate_cap_yielded_total"}


@pytest.fixture
def operator_env(environ: dict[str, str], receiver: WebhookReceiver) -> None:
    # Before settings, runtime, worker, beat and gunicorn are built from environ.
    environ["TOKENKEEPER_OPERATOR_USER"], environ["TOKENKEEPER_OPERATOR_PASSWORD"] = OPERATOR
    environ["TOKENKEEPER_WEBHOOK_URL"] = receiver.url
    environ["TOKENKEEPER_WEBHOOK_SECRET"] = "monitoring-webhook-secret"


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    # Ten-minute tokens: nothing comes due by itself while the test runs.
    server = TokenServer(lifetime=600).start()
    yield server
    server.stop()


def scrape(web: Gunicorn) -> str:
    token = base64.b64encode(":".join(OPERATOR).encode()).decode()
    request = urllib.request.Request(web.url + "/metrics", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_every_metric_the_alerts_and_the_dashboard_query_is_served(
    operator_env: None,
    runtime: Runtime,
    token_server: TokenServer,
    receiver: WebhookReceiver,
    start_processes: Callable[..., CeleryProcess],
    web_factory: Callable[[], Gunicorn],
    celery_client: Celery,
) -> None:
    """After a creation, a scheduled refresh by a real worker, a webhook delivery and beat's ticks, a scrape of
    the callback app under gunicorn declares every metric named by every rule expression and every dashboard
    query (histograms by their _bucket, _sum and _count series), and has samples for all of them but the one that
    needs a booked rate cap."""
    start_processes("worker")
    start_processes("beat")
    web = web_factory()
    Registry(runtime).create(cc_spec(token_server, "billing_api"))
    plan = runtime.store.load("billing_api").refresh_at  # type: ignore[union-attr]
    assert call(celery_client, "tokenkeeper.refresh_integration", "billing_api", plan, timeout=30)["outcome"] == (
        "refreshed"
    )
    assert receiver.take(1, timeout=30)[0].event["name"] == "billing_api"
    # The done rate needs two samples of the finished count SAMPLE_EVERY apart: the second is taken here, at the
    # time it would be, instead of waiting for beat to reach it.
    wait_until(lambda: runtime.store.capacity().get("at"), 20, "beat's first capacity figures")
    settings = runtime.settings
    measure_capacity(
        runtime.store,
        now=time.time() + SAMPLE_EVERY + 1,
        lost_after=settings.lost_after,
        patience=settings.capacity_patience,
    )
    wait_until(lambda: "tokenkeeper_webhook_deliveries_total" in scrape(web), 10, "a scrape")
    wait_until(
        lambda: samples(scrape(web)).get(("tokenkeeper_webhook_deliveries_total", (("outcome", "delivered"),))),
        10,
        "the delivery to be counted",
    )

    text = scrape(web)
    exposed = exposed_names(text)
    sampled = {name for name, _ in samples(text)}
    used = {f"rule {rule['alert']}": metric_names(rule["expr"]) for rule in rules()}
    used.update({f"panel {title}: {query}": metric_names(query) for title, query in dashboard_queries()})
    assert all(used.values())
    missing = {where: names - exposed - PROMETHEUS_SERIES for where, names in used.items()}
    assert {where: names for where, names in missing.items() if names} == {}
    unsampled = set().union(*used.values()) - PROMETHEUS_SERIES - sampled
    assert unsampled == NEEDS_A_BOOKED_RATE_CAP, text
    # The metrics added for the rules carry what they say.
    values = samples(text)
    assert values[("tokenkeeper_health", (("check", "worker"),))] == 1
    assert values[("tokenkeeper_refresh_lead_seconds", ())] == settings.refresh_lead
    assert values[("tokenkeeper_shortest_lifetime_seconds", ())] in (599, 600)
    assert time.time() - values[("tokenkeeper_last_refresh_timestamp_seconds", ())] < 60


class Prometheus:
    """The compose profile's prometheus service on this machine: its start script run by sh with the service's
    own command, the container's folders moved under ``tmp_path``, the callback target and the scrape and
    evaluation intervals (15 s) made local and short."""

    def __init__(self, tmp_path: Path, target: str, env: dict[str, str], log_dir: Path) -> None:
        if shutil.which("prometheus") is None:
            pytest.fail("prometheus is required (scripts/test installs Debian's prometheus package)")
        etc, data = tmp_path / "etc", tmp_path / "data"
        etc.mkdir(parents=True)
        data.mkdir()
        config = localized(PROMETHEUS_CONFIG.read_text(), etc, data)
        config = config.replace('"callback:5000"', f'"{target}"').replace("_interval: 15s", "_interval: 1s")
        (etc / "prometheus.yml").write_text(config)
        shutil.copy(RULES, etc / "tokenkeeper-rules.yml")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        service = compose()["services"]["prometheus"]
        script = localized(start_script("prometheus"), etc, data).replace("exec /bin/prometheus", "exec prometheus")
        arguments = [localized(argument, etc, data) for argument in service["command"]]
        self.log = open(log_dir / "prometheus.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            ["sh", "-c", script, "prometheus", *arguments, f"--web.listen-address=127.0.0.1:{self.port}"],
            env={"PATH": os.environ["PATH"], **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.ready, 30, "prometheus to be ready", 0.1)

    def ready(self) -> bool:
        assert self.process.poll() is None, (Path(self.log.name).read_text(errors="replace"))[-3000:]
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **query: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the error in JSON
            return json.load(exc)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.log.close()


@pytest.fixture
def start_prometheus(tmp_path: Path, log_dir: Path) -> Iterator[Callable[[str, dict[str, str]], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str, env: dict[str, str]) -> Prometheus:
        server = Prometheus(tmp_path / f"prometheus{len(started)}", target, env, log_dir)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_the_compose_prometheus_scrapes_the_callback_app_and_evaluates_every_rule(
    operator_env: None,
    environ: dict[str, str],
    runtime: Runtime,
    token_server: TokenServer,
    web_factory: Callable[[], Gunicorn],
    start_prometheus: Callable[[str, dict[str, str]], Prometheus],
) -> None:
    """A real Prometheus, started by the prometheus service's script on its compose command with the env
    file's values: it logs in to /metrics as the operator (the target is up and its series are stored), has
    none of the env file's secrets in its environment, evaluates every rule of rules.yml with health ok, and
    accepts every dashboard query."""
    web = web_factory()
    Registry(runtime).create(cc_spec(token_server, "billing_api"))
    env_file = {key: value for key, value in environ.items() if key.startswith("TOKENKEEPER_")}
    prometheus = start_prometheus(web.url.removeprefix("http://"), env_file)

    environment = Path(f"/proc/{prometheus.process.pid}/environ").read_bytes().decode(errors="replace")
    assert "TOKENKEEPER_" not in environment and environ["TOKENKEEPER_SECRET_KEY"] not in environment

    errors: list[str] = []

    def target_up() -> bool:
        # Empty until service discovery has handed the static target to the scrape loop.
        active = prometheus.api("targets")["data"]["activeTargets"]
        assert len(active) <= 1, active
        errors.extend(target["lastError"] for target in active if target["lastError"])
        return bool(active) and active[0]["health"] == "up"

    # The first scrape of each gunicorn process waits for its first health probe (a second of worker pings),
    # longer than this test's one-second scrape timeout; the next ones are served the probe's answer.
    try:
        wait_until(target_up, 30, "a successful scrape", 0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the scrapes failed with {sorted(set(errors))}") from None
    print("scrape errors before the first success:", sorted(set(errors)))
    assert not [error for error in errors if "401" in error or "403" in error], errors
    stored = prometheus.api("query", query='tokenkeeper_integrations{status="active"}')["data"]["result"]
    assert [float(series["value"][1]) for series in stored] == [1.0]

    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["data"]["groups"]
        found = [rule for group in groups for rule in group["rules"]]
        done = all(not rule["lastEvaluation"].startswith("0001-") for rule in found)
        return found if found and done else None

    evaluated_rules = wait_until(evaluated, 30, "every rule to be evaluated")
    assert isinstance(evaluated_rules, list)
    assert {rule["name"] for rule in evaluated_rules} == {rule["alert"] for rule in rules()}
    assert [(rule["name"], rule["lastError"]) for rule in evaluated_rules if rule["health"] != "ok"] == []

    refused = []
    for title, query in dashboard_queries():
        answer = prometheus.api("query", query=query)
        if answer["status"] != "success":
            refused.append((title, query, answer.get("error")))
    assert refused == []
