"""The monitoring files in deploy/ as data: the PromQL of the alert rules and of the Grafana
dashboard, and the metric names a /metrics page can produce."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "herald.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "herald-dashboard.json"
# Series Prometheus makes itself, not the services.
PROMETHEUS_OWN = {"up"}
_METRIC_RE = re.compile(r"\b(herald_[a-z0-9_]+|up)\b(?!\s*\()")
# The samples of each metric type, as the text format names them.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query on the dashboard."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] for target in panel.get("targets", ())]


def rule_queries() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in rules()]


def metric_names(expr: str) -> set[str]:
    """The series an expression selects (``herald_*`` and Prometheus' ``up``); label values
    in quotes are left out, so a queue named herald_x would not count."""
    return set(_METRIC_RE.findall(re.sub(r'"[^"]*"', '""', expr)))


def exported_names(texts: Iterable[str]) -> set[str]:
    """Every sample name the /metrics texts can carry, labelled families with no sample yet
    included (their TYPE line is there): counters as ``_total``, histograms as ``_bucket``,
    ``_sum`` and ``_count``."""
    names: set[str] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            names.update(f"{family.name}{suffix}" for suffix in _SUFFIXES.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names
