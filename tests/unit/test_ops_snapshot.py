"""The operator's snapshot: rates and latency quantiles from this process's counters, the
queues of dead letters, and `herald status` rendered from the document. Plain data only."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from herald.adapters.directory.base import NodeReport
from herald.ops.cluster_status import Snapshot
from herald.ops.snapshot import (
    History,
    ProcessSample,
    bucket_change,
    cluster_of,
    dead_letters,
    document,
    process_rates,
    quantile,
    read_registry,
    render_document,
    sample_of,
)

INF = math.inf
NOW_MS = 1_800_000_000_000


def _sample(at_s: float, delivered: float = 0, latency: tuple[tuple[float, float], ...] = ()) -> ProcessSample:
    return ProcessSample(
        at_s,
        {"herald_messages_delivered": {"": delivered}, "herald_messages_accepted": {"via=http": delivered / 2}},
        {"herald_push_connections": {"": 3}},
        latency or ((0.01, 0), (0.1, 0), (INF, 0)),
    )


def test_a_quantile_is_interpolated_inside_its_bucket_as_prometheus_does() -> None:
    buckets = [(0.005, 0.0), (0.01, 50.0), (0.025, 100.0), (INF, 100.0)]

    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.99, buckets) == pytest.approx(0.01 + 0.015 * 49 / 50)


def test_a_quantile_in_the_open_bucket_is_the_highest_finite_bound() -> None:
    assert quantile(0.99, [(0.01, 10.0), (5.0, 10.0), (INF, 20.0)]) == 5.0


def test_no_observation_means_no_quantile() -> None:
    assert quantile(0.5, [(0.01, 0.0), (INF, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_the_latency_of_a_window_leaves_out_what_was_observed_before_it() -> None:
    before = ((0.01, 1000.0), (1.0, 1000.0), (INF, 1000.0))  # a thousand fast ones, long ago
    after = ((0.01, 1000.0), (1.0, 1010.0), (INF, 1010.0))  # then ten slow ones

    assert bucket_change(before, after) == [(0.01, 0.0), (1.0, 10.0), (INF, 10.0)]
    rates = process_rates(_sample(10.0, latency=after), _sample(5.0, latency=before))
    assert rates.p50_ms is not None and rates.p50_ms > 10
    assert rates.observed == 10


def test_rates_are_the_change_of_each_counter_over_the_window() -> None:
    rates = process_rates(_sample(15.0, delivered=700), _sample(10.0, delivered=200))

    assert rates.window_s == 5.0
    assert rates.per_s["delivered"] == 100.0
    assert rates.per_s["accepted"] == 50.0
    assert rates.per_s["acked"] == 0.0  # a counter this process does not have moves at 0/s


def test_without_a_baseline_the_rates_are_unknown_not_zero() -> None:
    rates = process_rates(_sample(1.0, delivered=5), None)

    assert rates.window_s is None and set(rates.per_s.values()) == {None} and rates.p99_ms is None


def test_the_baseline_is_the_newest_sample_a_window_old() -> None:
    history = History()
    for at_s in (0.0, 3.0, 6.0, 9.0, 10.8):
        history.add(_sample(at_s))

    baseline = history.baseline(11.0)
    assert baseline is not None and baseline.at_s == 6.0


def test_a_young_history_measures_against_its_oldest_sample_once_it_is_old_enough() -> None:
    history = History()
    history.add(_sample(10.0))

    assert history.baseline(10.2) is None
    baseline = history.baseline(11.0)
    assert baseline is not None and baseline.at_s == 10.0


def test_the_history_forgets_samples_no_window_needs() -> None:
    history = History(most=4)
    for at_s in range(10):
        history.add(_sample(float(at_s)))
    history.add(_sample(100.0))

    assert history.baseline(100.4) is None  # everything older than a minute is gone


def test_dead_letter_queues_are_found_by_their_name_whatever_the_bus_calls_them() -> None:
    queues = {"dispatch": 3, "dispatch.dlq": 2, "dead:receipts": 1, "node:push-a": 0, "DLQ": 4}

    assert dead_letters(queues) == {"dispatch.dlq": 2, "dead:receipts": 1, "DLQ": 4}


def test_a_registry_becomes_totals_by_label_gauges_and_latency_buckets() -> None:
    registry = CollectorRegistry()
    accepted = Counter("herald_messages_accepted", "", ["via"], registry=registry)
    latency = Histogram("herald_delivery_latency_seconds", "", buckets=(0.01, 0.1), registry=registry)
    Counter("other_thing", "", registry=registry).inc()
    accepted.labels("http").inc(7)
    accepted.labels("socket").inc(2)
    latency.observe(0.005)
    latency.observe(0.05)

    sample = sample_of(read_registry(registry), 1.0)

    assert sample.counters == {"herald_messages_accepted": {"via=http": 7.0, "via=socket": 2.0}}
    assert sample.total("herald_messages_accepted") == 9.0
    assert sample.latency == ((0.01, 1.0), (0.1, 2.0), (INF, 2.0))


def _cluster() -> Snapshot:
    return Snapshot(
        at_ms=NOW_MS,
        nodes=[
            NodeReport("push-a", 12, {"app_1": 12}, 0, NOW_MS - 500),
            NodeReport("push-b", 4, {"app_1": 4}, None, NOW_MS - 40_000),
        ],
        alive={"push-a"},
        queues={"dispatch": 5, "dispatch.dlq": 1},
        rates={"app_1": 40.0},
        app_names={"app_1": "shop"},
    )


def test_the_document_counts_live_nodes_only_and_flags_dead_letters() -> None:
    doc = document("push-a", _cluster(), _sample(15.0, delivered=700), _sample(10.0, delivered=200))

    assert doc["connections"] == 12
    assert [(n["node_id"], n["alive"]) for n in doc["nodes"]] == [("push-a", True), ("push-b", False)]
    assert doc["dead_letters"] == {"dispatch.dlq": 1}
    assert doc["apps"] == [{"app_id": "app_1", "name": "shop", "connections": 12, "messages_per_s": 40.0}]
    assert doc["routed_per_s"] == 40.0
    assert doc["process"]["per_s"]["delivered"] == 100.0


def test_the_cluster_part_of_a_document_is_the_cluster_it_was_made_from() -> None:
    cluster = _cluster()

    assert cluster_of(document("push-a", cluster, _sample(1.0), None)) == cluster


def test_herald_status_from_a_document_shows_the_cluster_then_the_answering_process() -> None:
    latency = ((0.01, 0.0), (0.025, 100.0), (INF, 100.0))
    doc = document("push-a", _cluster(), _sample(15.0, delivered=700, latency=latency), _sample(10.0))

    lines = render_document(doc).splitlines()

    assert lines[0] == "Nodes: 1 alive, 12 connections"
    at = lines.index("Process answering (push-a)")
    assert lines[at + 1] == "  over the last 5.0 s: 70.0 accepted/s, 0.0 dispatched/s, 140.0 delivered/s, 0.0 acked/s"
    assert lines[at + 2] == "  delivery latency: p50 17.5 ms, p99 24.9 ms (100 deliveries)"
    assert lines[-1] == "  dead letters: dispatch.dlq 1"
