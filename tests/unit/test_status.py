"""`herald status` renders a snapshot of the cluster as plain tables."""

from __future__ import annotations

from herald.adapters.directory.base import NodeReport
from herald.ops.cluster_status import Snapshot, render

NOW_MS = 1_800_000_000_000


def _snapshot(**changes: object) -> Snapshot:
    values: dict[str, object] = {
        "at_ms": NOW_MS,
        "nodes": [
            NodeReport("push-a", 1200, {"app_1": 1000, "app_2": 200}, 0, NOW_MS - 400),
            NodeReport("push-b", 7, {"app_1": 7}, None, NOW_MS - 32_000),
        ],
        "alive": {"push-a"},
        "queues": {"dispatch": 3, "node:push-a": 0},
        "rates": {"app_1": 12.5, "app_3": 0.1},
        "app_names": {"app_1": "shop"},
    }
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]


def _row(text: str, first: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [first])


def test_a_live_node_shows_its_connections_and_when_it_last_reported() -> None:
    assert _row(render(_snapshot()), "push-a") == ["push-a", "alive", "1,200", "0.4", "s", "ago", "0"]


def test_a_dead_node_shows_no_connections_and_an_unknown_queue() -> None:
    assert _row(render(_snapshot()), "push-b") == ["push-b", "dead", "-", "32.0", "s", "ago", "-"]


def test_apps_count_connections_of_live_nodes_only_and_show_their_rate() -> None:
    text = render(_snapshot())

    assert _row(text, "app_1") == ["app_1", "shop", "1,000", "12.5"]
    assert _row(text, "app_3") == ["app_3", "0", "0.1"]  # no name known, no connections


def test_the_headline_counts_live_nodes_and_their_connections() -> None:
    assert render(_snapshot()).splitlines()[0] == "Nodes: 1 alive, 1,200 connections"


def test_an_empty_cluster_says_so_instead_of_printing_empty_tables() -> None:
    text = render(_snapshot(nodes=[], alive=set(), queues={}, rates={}))

    assert "(no push node has reported)" in text and "(no connections and no messages)" in text


def test_what_could_not_be_read_is_listed_at_the_end() -> None:
    text = render(_snapshot(problems=["bus: RabbitMQ unavailable"]))

    assert text.splitlines()[-2:] == ["Could not read:", "  bus: RabbitMQ unavailable"]
