"""The dashboard's and the alert rules' queries name metrics the services really export:
read /metrics of every service of `herald dev` and compare (histogram and counter suffixes
included). A renamed metric breaks this test, not an operator's dashboard."""

from __future__ import annotations

import httpx

from tests.support.monitoring import (
    PROMETHEUS_OWN,
    dashboard_queries,
    exported_names,
    metric_names,
    rule_queries,
)
from tests.support.procs import Standalone

SERVICES = {"auth": 1, "collect": 2, "dispatch": 3, "push": 4}


async def _exported(standalone: Standalone, http: httpx.AsyncClient) -> set[str]:
    texts = []
    for service, offset in SERVICES.items():
        response = await http.get(f"http://127.0.0.1:{standalone.port_base + offset}/metrics")
        assert response.status_code == 200, f"{service}: {response.status_code}"
        texts.append(response.text)
    return exported_names(texts) | PROMETHEUS_OWN


async def test_every_metric_of_the_alert_rules_is_exported(standalone: Standalone, http: httpx.AsyncClient) -> None:
    exported = await _exported(standalone, http)

    for alert, expr in rule_queries():
        used = metric_names(expr)
        assert used, f"{alert}: no metric in {expr!r}"
        assert used <= exported, f"{alert}: {sorted(used - exported)} not exported by any service"


async def test_every_metric_of_the_dashboard_is_exported(standalone: Standalone, http: httpx.AsyncClient) -> None:
    exported = await _exported(standalone, http)

    for panel, expr in dashboard_queries():
        used = metric_names(expr)
        assert used, f"{panel}: no metric in {expr!r}"
        assert used <= exported, f"{panel}: {sorted(used - exported)} not exported by any service"


def test_a_renamed_metric_would_be_caught() -> None:
    """The comparison itself: names the text format never produces are not taken as exported."""
    text = "# TYPE herald_a counter\n# TYPE herald_b_seconds histogram\n# TYPE herald_c gauge\nherald_c 1\n"

    names = exported_names([text])

    assert {"herald_a_total", "herald_b_seconds_bucket", "herald_b_seconds_count", "herald_c"} <= names
    assert not {"herald_a", "herald_b_seconds", "herald_c_total"} & names
    assert metric_names('max by (queue) (herald_c{queue="herald_x"}) > 0 and up == 1') == {"herald_c", "up"}
