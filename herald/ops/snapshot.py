"""The operator's snapshot: the cluster and this process's numbers, as one JSON document.

A push node answers it at ``/ops/snapshot`` (``herald.services.push.ops_page``) for the
``/ops`` page and for ``herald status`` against ``herald dev``. The cluster part is what
``cluster_status.gather`` reads from the directory and the bus (every node's report,
queue depths, per-app rates); the process part is this process's own Prometheus
counters. A counter is a total since start, while an operator watches how fast it
moves: so each snapshot keeps a sample of the counters (``History``) and reports rates
and latency quantiles over the seconds since an earlier one. The page then only draws.

Everything here is pure (data in, data out), so the numbers the page shows are tested
without a server.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from herald.adapters.directory.base import NodeReport
from herald.ops.cluster_status import RATE_WINDOW_S, Snapshot, render

# Rates compare with a sample about this old: long enough to smooth one poll's jitter,
# short enough that a burst shows while it happens.
WINDOW_S = 5.0
# A younger baseline than this gives rates too noisy to draw; the answer says "unknown".
MIN_WINDOW_S = 0.5
# Samples older than this are of no use to any window.
KEPT_S = 60.0
LATENCY = "herald_delivery_latency_seconds"
# The message counters the page charts, by the short name it shows them under.
STAGES = {
    "accepted": "herald_messages_accepted",
    "dispatched": "herald_messages_dispatched",
    "delivered": "herald_messages_delivered",
    "acked": "herald_messages_acked",
}
# Queues holding messages that were given up on: named so by whichever bus reports them.
DEAD_LETTER_RE = re.compile(r"dead|dlq", re.IGNORECASE)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    """One metric family as the registry exposes it: its type and labelled samples."""

    name: str
    type: str
    samples: tuple[tuple[str, Labels, float], ...]  # (sample name, labels, value)


def read_registry(registry: CollectorRegistry) -> list[Family]:
    """This process's Herald metrics, as plain data."""
    return [
        Family(
            family.name,
            family.type,
            tuple((s.name, tuple(sorted(s.labels.items())), float(s.value)) for s in family.samples),
        )
        for family in registry.collect()
        if family.name.startswith("herald_")
    ]


@dataclass(frozen=True)
class ProcessSample:
    """This process's counters at one moment (``at_s``: a monotonic clock)."""

    at_s: float
    counters: dict[str, dict[str, float]]  # family -> label text ("" without labels) -> total
    gauges: dict[str, dict[str, float]]
    latency: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last

    def total(self, family: str) -> float:
        return sum(self.counters.get(family, {}).values())


def sample_of(families: Iterable[Family], at_s: float) -> ProcessSample:
    counters: dict[str, dict[str, float]] = {}
    gauges: dict[str, dict[str, float]] = {}
    latency: list[tuple[float, float]] = []
    for family in families:
        for name, labels, value in family.samples:
            if family.type == "counter" and name == f"{family.name}_total":
                counters.setdefault(family.name, {})[_label_text(labels)] = value
            elif family.type == "gauge":
                gauges.setdefault(family.name, {})[_label_text(labels)] = value
            elif family.name == LATENCY and name == f"{LATENCY}_bucket":
                latency.append((float(dict(labels)["le"]), value))
    return ProcessSample(at_s, counters, gauges, tuple(sorted(latency)))


def _label_text(labels: Labels) -> str:
    return ",".join(f"{key}={value}" for key, value in labels)


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets, interpolated inside the bucket it
    falls in, as Prometheus' ``histogram_quantile`` does (so the page and a Grafana panel
    agree). None without observations; the highest finite bound when it falls in +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def bucket_change(old: Sequence[tuple[float, float]], new: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """What was observed between two samples of the same histogram."""
    before = dict(old)
    return [(bound, max(0.0, count - before.get(bound, 0.0))) for bound, count in new]


class History:
    """Recent samples of this process's counters, to measure rates against.

    Bounded twice: by age (``KEPT_S``) and by count, whatever the polling rate.
    """

    def __init__(self, most: int = 256) -> None:
        self._samples: deque[ProcessSample] = deque(maxlen=most)

    def add(self, sample: ProcessSample) -> None:
        while self._samples and sample.at_s - self._samples[0].at_s > KEPT_S:
            self._samples.popleft()
        self._samples.append(sample)

    def baseline(self, now_s: float) -> ProcessSample | None:
        """The newest sample at least ``WINDOW_S`` old, else the oldest one old enough to
        measure against; None when there is none."""
        chosen = None
        for sample in self._samples:
            age = now_s - sample.at_s
            if age >= WINDOW_S:
                chosen = sample
            elif chosen is None and age >= MIN_WINDOW_S:
                return sample
        return chosen


@dataclass(frozen=True)
class ProcessRates:
    window_s: float | None
    per_s: dict[str, float | None]  # STAGES -> per second over the window
    p50_ms: float | None
    p99_ms: float | None
    observed: int  # live deliveries timed within the window


def process_rates(current: ProcessSample, baseline: ProcessSample | None) -> ProcessRates:
    if baseline is None or current.at_s - baseline.at_s < MIN_WINDOW_S:
        return ProcessRates(None, dict.fromkeys(STAGES), None, None, 0)
    window = current.at_s - baseline.at_s
    per_s: dict[str, float | None] = {
        stage: max(0.0, current.total(family) - baseline.total(family)) / window for stage, family in STAGES.items()
    }
    observed = bucket_change(baseline.latency, current.latency)
    p50, p99 = quantile(0.5, observed), quantile(0.99, observed)
    return ProcessRates(
        round(window, 3),
        per_s,
        None if p50 is None else p50 * 1000,
        None if p99 is None else p99 * 1000,
        int(observed[-1][1]) if observed else 0,
    )


def dead_letters(queues: Mapping[str, int]) -> dict[str, int]:
    """The queues of messages given up on, whatever the bus calls them."""
    return {name: depth for name, depth in queues.items() if DEAD_LETTER_RE.search(name)}


def document(node_id: str, cluster: Snapshot, current: ProcessSample, baseline: ProcessSample | None) -> dict[str, Any]:
    """The JSON the ``/ops`` page and ``herald status`` read."""
    rates = process_rates(current, baseline)
    by_app = cluster.connections_by_app
    apps = sorted({*by_app, *cluster.rates}, key=lambda a: (-cluster.rates.get(a, 0.0), -by_app.get(a, 0), a))
    return {
        "at_ms": cluster.at_ms,
        "node_id": node_id,
        "nodes": [
            {
                "node_id": node.node_id,
                "alive": node.node_id in cluster.alive,
                "connections": node.connections,
                "by_app": node.by_app,
                "queue_depth": node.queue_depth,
                "reported_at_ms": node.at_ms,
            }
            for node in cluster.nodes
        ],
        "connections": sum(node.connections for node in cluster.nodes if node.node_id in cluster.alive),
        "queues": dict(sorted(cluster.queues.items())),
        "dead_letters": dead_letters(cluster.queues),
        "apps": [
            {
                "app_id": app_id,
                "name": cluster.app_names.get(app_id, ""),
                "connections": by_app.get(app_id, 0),
                "messages_per_s": round(cluster.rates.get(app_id, 0.0), 3),
            }
            for app_id in apps
        ],
        "rate_window_s": RATE_WINDOW_S,
        "routed_per_s": round(sum(cluster.rates.values()), 3),
        "problems": cluster.problems,
        "process": {
            "window_s": rates.window_s,
            "per_s": {stage: None if value is None else round(value, 3) for stage, value in rates.per_s.items()},
            "latency_ms": {
                "p50": _rounded(rates.p50_ms),
                "p99": _rounded(rates.p99_ms),
                "observed": rates.observed,
            },
            "counters": {name: dict(sorted(values.items())) for name, values in sorted(current.counters.items())},
            "gauges": {name: dict(sorted(values.items())) for name, values in sorted(current.gauges.items())},
        },
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def cluster_of(doc: Mapping[str, Any]) -> Snapshot:
    """The cluster part of a document, as ``cluster_status`` renders it."""
    nodes = [
        NodeReport(n["node_id"], n["connections"], n["by_app"], n["queue_depth"], n["reported_at_ms"])
        for n in doc["nodes"]
    ]
    return Snapshot(
        at_ms=doc["at_ms"],
        nodes=nodes,
        alive={n["node_id"] for n in doc["nodes"] if n["alive"]},
        queues=dict(doc["queues"]),
        rates={a["app_id"]: a["messages_per_s"] for a in doc["apps"] if a["messages_per_s"]},
        app_names={a["app_id"]: a["name"] for a in doc["apps"] if a["name"]},
        problems=list(doc["problems"]),
    )


def render_document(doc: Mapping[str, Any]) -> str:
    """``herald status`` for a snapshot document: the cluster tables, then this process."""
    process = doc["process"]
    lines = [render(cluster_of(doc)), "", f"Process answering ({doc['node_id']})"]
    if process["window_s"] is None:
        lines.append("  (rates need a second snapshot: ask again in a few seconds)")
    else:
        per_s = process["per_s"]
        lines.append(
            f"  over the last {process['window_s']:.1f} s: "
            + ", ".join(f"{per_s[stage]:,.1f} {stage}/s" for stage in STAGES)
        )
        latency = process["latency_ms"]
        if latency["p50"] is None:
            lines.append("  delivery latency: no live delivery in the window")
        else:
            lines.append(
                f"  delivery latency: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms "
                f"({latency['observed']:,} deliveries)"
            )
    counters = process["counters"]
    totals = ", ".join(f"{sum(counters.get(family, {}).values()):,.0f} {stage}" for stage, family in STAGES.items())
    lines.append(f"  since start: {totals}")
    if doc["dead_letters"]:
        lines.append("  dead letters: " + ", ".join(f"{q} {n:,}" for q, n in doc["dead_letters"].items()))
    return "\n".join(lines)
