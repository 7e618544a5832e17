"""`herald status`: the cluster as an operator needs it at a glance.

Read from where the cluster already keeps it, so nothing has to be running for the command
but the servers: node reports and per-app message counts in the directory (written by push
nodes at each heartbeat and by dispatch once a second), queue depths from the broker, app
names from the store. Gathering and rendering are split so the table is testable as text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory, NodeReport
from herald.adapters.store.base import Store
from herald.core.errors import Unavailable

RATE_WINDOW_S = 10
EVENT_GROUPS = ("webhooks",)


@dataclass(frozen=True)
class Snapshot:
    at_ms: int
    nodes: list[NodeReport]
    alive: set[str]
    queues: dict[str, int]
    rates: dict[str, float]  # app_id -> messages/s over RATE_WINDOW_S
    app_names: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what could not be read, and why

    @property
    def connections_by_app(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for node in self.nodes:
            if node.node_id in self.alive:
                for app_id, count in node.by_app.items():
                    totals[app_id] = totals.get(app_id, 0) + count
        return totals


async def gather(directory: Directory, bus: Bus, store: Store | None, now_ms: int) -> Snapshot:
    """Everything the table shows; a part that cannot be read is reported, not fatal."""
    problems: list[str] = []
    nodes: list[NodeReport] = []
    alive: set[str] = set()
    rates: dict[str, float] = {}
    queues: dict[str, int] = {}
    try:
        nodes = await directory.node_reports()
        alive = set(await directory.live_nodes())
        rates = await directory.message_rates(RATE_WINDOW_S, now_ms // 1000)
    except Unavailable as exc:
        problems.append(f"directory: {exc.message}")
    try:
        queues = await bus.queue_depths([node.node_id for node in nodes], EVENT_GROUPS)
    except Unavailable as exc:
        problems.append(f"bus: {exc.message}")
    names: dict[str, str] = {}
    if store is not None:
        app_ids = sorted({*rates, *(app for node in nodes for app in node.by_app)})
        try:
            apps = await asyncio.gather(*(store.get_app(app_id) for app_id in app_ids))
            names = {app.app_id: app.name for app in apps if app is not None}
        except Unavailable as exc:
            problems.append(f"store: {exc.message}")
    return Snapshot(now_ms, nodes, alive, queues, rates, names, problems)


def render(snapshot: Snapshot) -> str:
    nodes = [
        [
            node.node_id,
            "alive" if node.node_id in snapshot.alive else "dead",
            f"{node.connections:,}" if node.node_id in snapshot.alive else "-",
            _ago(snapshot.at_ms - node.at_ms),
            "-" if node.queue_depth is None else f"{node.queue_depth:,}",
        ]
        for node in snapshot.nodes
    ]
    total = sum(node.connections for node in snapshot.nodes if node.node_id in snapshot.alive)
    queues = [[name, f"{depth:,}"] for name, depth in sorted(snapshot.queues.items())]
    by_app = snapshot.connections_by_app
    apps = [
        [
            app_id,
            snapshot.app_names.get(app_id, ""),
            f"{by_app.get(app_id, 0):,}",
            f"{snapshot.rates.get(app_id, 0.0):,.1f}",
        ]
        for app_id in sorted({*by_app, *snapshot.rates}, key=lambda a: (-by_app.get(a, 0), a))
    ]
    lines = [
        f"Nodes: {len(snapshot.alive & {n.node_id for n in snapshot.nodes})} alive, {total:,} connections",
        *_table(["node", "state", "connections", "last heartbeat", "queue"], nodes, "no push node has reported"),
        "",
        "Queues",
        *_table(["queue", "messages"], queues, "no queue could be read"),
        "",
        f"Apps (messages/s over the last {RATE_WINDOW_S} s)",
        *_table(["app", "name", "connections", "messages/s"], apps, "no connections and no messages"),
    ]
    if snapshot.problems:
        lines += ["", "Could not read:", *(f"  {problem}" for problem in snapshot.problems)]
    return "\n".join(lines)


def _ago(ms: int) -> str:
    seconds = max(0, ms) / 1000
    return f"{seconds:.1f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _table(header: list[str], rows: list[list[str]], empty: str) -> list[str]:
    if not rows:
        return [f"  ({empty})"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
