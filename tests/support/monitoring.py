"""The monitoring profile's files as the tests read them: alert expressions, dashboard queries, the compose
services' start scripts moved onto this machine, and the names a /metrics scrape exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "config" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
GRAFANA_DIR = ROOT / "config" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "tokenkeeper.json"

# Series Prometheus makes itself, not read from /metrics.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS"})
# Grafana's own variables, as Prometheus would see them once Grafana filled them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def rules() -> list[dict[str, Any]]:
    """Every alerting rule of rules.yml."""
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too; rows themselves left out."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, Grafana's variables filled in."""
    queries = []
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            queries.append((panel["title"], expression))
    return queries


def exposed_names(scrape: str) -> set[str]:
    """The series names a /metrics text declares: counters with _total, histograms with _bucket/_sum/_count."""
    names = set()
    for family in text_string_to_metric_families(scrape):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def samples(scrape: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, sorted labels) -> value of every sample of a /metrics text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }


def start_script(service: str) -> str:
    """A compose service's ``sh -c`` entrypoint script as the container's shell runs it ($$ is $)."""
    entrypoint = compose()["services"][service]["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"], entrypoint
    return entrypoint[2].replace("$$", "$")


def localized(text: str, etc: Path, data: Path) -> str:
    """``text`` with the prometheus container's folders moved to ``etc`` and ``data`` on this machine."""
    # One pass, so a folder put in is never itself rewritten.
    return re.sub(
        r"/etc/prometheus/|(?<![\w.-])/prometheus\b",
        lambda match: f"{etc}/" if match.group().startswith("/etc/") else str(data),
        text,
    )
