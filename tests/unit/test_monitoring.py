"""The monitoring profile's files: the alert rules checked and unit-tested by a real promtool, the dashboard's
shape, the compose services that mount them, and their start scripts run by sh.

What the rules and the dashboard query against a running service is tested in
tests/integration/test_monitoring.py (a real callback app, scraped by a real Prometheus).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.monitoring import (
    DASHBOARD,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    ROOT,
    RULES,
    RULES_TEST,
    compose,
    dashboard,
    localized,
    panels,
    rules,
    start_script,
)
from tests.support.promql import metric_names


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is required (scripts/test installs Debian's prometheus package)")
    return subprocess.run(["promtool", *arguments], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` finds every rule valid (PromQL parses, templates render, no duplicate names)."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules` runs rules_test.yml: each alert fires when it should and stays quiet when not."""
    result = promtool("test", "rules", str(RULES_TEST))
    print(result.stdout + result.stderr)  # shown with -s: the output the issue asks to see
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_rule_whose_threshold_is_broken(tmp_path: Path) -> None:
    """The unit tests can fail: with the stalled-refresh floor and the health filter taken out, promtool says which
    cases broke."""
    broken = (
        RULES.read_text()
        .replace(
            "clamp_min(min(tokenkeeper_shortest_lifetime_seconds), 120)", "min(tokenkeeper_shortest_lifetime_seconds)"
        )
        .replace('tokenkeeper_health{check!="capacity"}[3m]', "tokenkeeper_health[3m]")
    )
    (tmp_path / "rules.yml").write_text(broken)
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    result = promtool("test", "rules", str(tmp_path / "rules_test.yml"))
    assert result.returncode != 0
    assert "gaps under two minutes never fire" in result.stdout + result.stderr
    assert 'check="capacity"' in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet_and_documented() -> None:
    """Each alert has a promtool case where it fires and one where it must not, a severity, a summary and a
    description, and a line in docs/operating.md."""
    cases: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            seen = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
            seen["firing" if case["exp_alerts"] else "quiet"] += 1
    operating = (ROOT / "docs" / "operating.md").read_text()
    for rule in rules():
        name = rule["alert"]
        assert cases.get(name, {}).get("firing") and cases[name]["quiet"], name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80, name
        assert f"`{name}`" in operating, name


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ('max(tokenkeeper_integrations{status="needs_reauth"}) > 0', {"tokenkeeper_integrations"}),
        (
            "histogram_quantile(0.99, max by (le) (rate(a_bucket[10m]))) > max(lead_seconds) / 2",
            {"a_bucket", "lead_seconds"},
        ),
        ("sum(rate(x_total{job='a', le=\"0.5\"}[5m])) by (instance, le)", {"x_total"}),
        ("a > b offset 15m and on() max(increase(c[$__rate_interval])) > 0", {"a", "b", "c"}),
        ("time() - max(last) > clamp_min(min(lifetime), 120)", {"last", "lifetime"}),
        ("x / ignoring(outcome) group_left(host) y unless z @ 1609746000", {"x", "y", "z"}),
        ('count_values("version", build_info) or vector(1e3)', {"build_info"}),
        ("max_over_time(deriv(q[1h:5m])[1d:]) == bool 1", {"q"}),
    ],
)
def test_metric_names_are_read_from_promql(expression: str, names: set[str]) -> None:
    """The metric names of an expression: not functions, keywords, labels, strings, numbers or durations."""
    assert metric_names(expression) == names


def test_the_dashboard_queries_prometheus_through_its_data_source_variable() -> None:
    """The dashboard has a uid, a Prometheus data source variable that every panel and query uses, unique
    panel ids, panels within the 24-column grid, and at least one query per panel."""
    board = dashboard()
    assert board["uid"] == "tokenkeeper" and board["title"]
    (variable,) = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    ids = [panel["id"] for panel in board["panels"]]
    ids += [inner["id"] for row in board["panels"] for inner in row.get("panels", [])]
    assert len(ids) == len(set(ids))
    shown = list(panels(board))
    assert len(shown) >= 10
    for panel in shown:
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted and target["expr"] and metric_names(target["expr"]), panel["title"]


def test_the_monitoring_profile_mounts_files_that_exist_where_the_configs_look() -> None:
    """prometheus and grafana run only with `--profile monitoring`; every file they mount exists in the
    repository, and the paths the configs name are the paths the files are mounted at."""
    services = compose()["services"]
    assert {name for name, service in services.items() if service.get("profiles")} == {"prometheus", "grafana"}
    mounts: dict[str, dict[str, Path]] = {}
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["profiles"] == ["monitoring"], name
        assert service["image"].split(":")[0] in {"prom/prometheus", "grafana/grafana"}, name
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), name
        mounts[name] = {}
        for volume in service["volumes"]:
            source, target, *_ = volume.split(":")
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
                mounts[name][target] = ROOT / source
    prometheus = mounts["prometheus"]
    assert prometheus["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert [prometheus[path] for path in config["rule_files"]] == [RULES]
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["callback:5000"] and job["metrics_path"] == "/metrics"
    assert "--config.file=/prometheus/prometheus.yml" in services["prometheus"]["command"]

    grafana = mounts["grafana"]
    datasources = yaml.safe_load(grafana["/etc/grafana/provisioning/datasources/tokenkeeper.yml"].read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(grafana["/etc/grafana/provisioning/dashboards/tokenkeeper.yml"].read_text())
    dashboards_in = providers["providers"][0]["options"]["path"]
    assert grafana[dashboards_in] == GRAFANA_DIR / "dashboards" and DASHBOARD.parent == grafana[dashboards_in]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in}/{DASHBOARD.name}"


def _run_start_script(script: str, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script, "start", *arguments],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _prometheus_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An /etc/prometheus with the repository's config and rules, and an empty data folder."""
    etc, data = tmp_path / "etc", tmp_path / "data"
    etc.mkdir()
    data.mkdir()
    (etc / "prometheus.yml").write_text(localized(PROMETHEUS_CONFIG.read_text(), etc, data))
    shutil.copy(RULES, etc / "tokenkeeper-rules.yml")
    return etc, data


ENV_FILE = {
    "TOKENKEEPER_OPERATOR_USER": "ops",
    "TOKENKEEPER_OPERATOR_PASSWORD": "pa$$ word 'with' \"quotes\"",
    "TOKENKEEPER_SECRET_KEY": "the-fernet-key",
    "TOKENKEEPER_REDIS_URL": "redis://tokenkeeper:redis-pw@redis:6379/0",
    "REDIS_RUNNER_PASSWORD": "runner-pw",
}


def test_the_prometheus_start_script_hands_prometheus_the_operator_login_and_nothing_else(tmp_path: Path) -> None:
    """The prometheus service's start script, run by sh: the password in a 0600 file, the user in a config that
    promtool accepts, and Prometheus started without the env file's secrets in its environment."""
    etc, data = _prometheus_dirs(tmp_path)
    # `env` in place of Prometheus prints the environment Prometheus would get.
    script = localized(start_script("prometheus"), etc, data).replace('exec /bin/prometheus "$@"', "exec env")
    result = _run_start_script(script, ENV_FILE)
    assert result.returncode == 0, result.stderr
    assert "TOKENKEEPER_" not in result.stdout and "REDIS_" not in result.stdout
    assert not any(secret in result.stdout for secret in ENV_FILE.values())
    password = data / "tokenkeeper-operator.password"
    assert password.read_text() == ENV_FILE["TOKENKEEPER_OPERATOR_PASSWORD"]
    assert password.stat().st_mode & 0o777 == 0o600
    rendered = data / "prometheus.yml"
    job = yaml.safe_load(rendered.read_text())["scrape_configs"][0]
    assert job["basic_auth"] == {"username": "ops", "password_file": str(password)}
    assert ENV_FILE["TOKENKEEPER_OPERATOR_PASSWORD"] not in rendered.read_text()
    check = promtool("check", "config", str(rendered))
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_prometheus_start_script_refuses_a_missing_password_or_an_odd_user(tmp_path: Path) -> None:
    """Without the operator password, or with a user that cannot go into the config as it is, the start script
    stops naming the variable, and writes nothing."""
    etc, data = _prometheus_dirs(tmp_path)
    script = localized(start_script("prometheus"), etc, data).replace('exec /bin/prometheus "$@"', "exec env")
    for env, named in (
        ({}, "TOKENKEEPER_OPERATOR_PASSWORD"),
        ({"TOKENKEEPER_OPERATOR_PASSWORD": "pw", "TOKENKEEPER_OPERATOR_USER": "a/b"}, "TOKENKEEPER_OPERATOR_USER"),
        ({"TOKENKEEPER_OPERATOR_PASSWORD": "pw", "TOKENKEEPER_OPERATOR_USER": "x&y"}, "TOKENKEEPER_OPERATOR_USER"),
    ):
        result = _run_start_script(script, env)
        assert result.returncode != 0 and named in result.stderr, (env, result.stderr)
    assert list(data.iterdir()) == []


def test_the_grafana_start_script_makes_the_operator_its_admin_and_drops_the_rest() -> None:
    """The grafana service's start script, run by sh: Grafana's admin user and password are the operator's, and
    no other variable of the env file reaches Grafana; without a password it stops naming the variable."""
    script = start_script("grafana").replace("exec /run.sh", "exec env")
    result = _run_start_script(script, ENV_FILE)
    assert result.returncode == 0, result.stderr
    environment = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert environment["GF_SECURITY_ADMIN_USER"] == "ops"
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == ENV_FILE["TOKENKEEPER_OPERATOR_PASSWORD"]
    assert not [name for name in environment if name.startswith(("TOKENKEEPER_", "REDIS_"))]
    refused = _run_start_script(script, {})
    assert refused.returncode != 0 and "TOKENKEEPER_OPERATOR_PASSWORD" in refused.stderr
