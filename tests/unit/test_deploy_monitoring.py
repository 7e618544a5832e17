"""deploy/prometheus and deploy/grafana are valid for the tools that read them: promtool
checks the scrape config and the rules and runs the rules' own tests; every dashboard
query parses as PromQL. (That their metric names exist: tests/e2e/test_monitoring_metrics.py.)

Skipped, saying why, only where promtool (Debian package prometheus) is not installed;
scripts/test installs it when it can.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.monitoring import PROMETHEUS, RULES, dashboard, dashboard_queries, rules

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool here: install the Debian package prometheus (scripts/test does)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)


@needs_promtool
def test_the_scrape_config_is_valid_and_loads_the_rules() -> None:
    run = _promtool("check", "config", "prometheus.yml")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 rule files found" in run.stdout


@needs_promtool
def test_the_alert_rules_are_valid() -> None:
    run = _promtool("check", "rules", RULES.name)

    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_each_alert_fires_on_what_it_is_about_and_not_on_a_healthy_cluster() -> None:
    run = _promtool("test", "rules", "herald.rules.test.yml")

    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    recorded = [
        {"record": f"herald_dashboard:query_{n}", "expr": expr} for n, (_, expr) in enumerate(dashboard_queries())
    ]
    check = tmp_path / "dashboard-queries.yml"
    check.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))

    run = _promtool("check", "rules", str(check))

    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_says_what_broke_and_how_bad_it_is() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in ("page", "warn"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_dashboard_reads_the_prometheus_its_user_chooses() -> None:
    board = dashboard()
    [variable] = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
