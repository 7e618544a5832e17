"""The directory: who is connected where, right now. Fast, shared, and allowed to forget.

Redis for clusters, in-process dicts for standalone; one specification
(tests/integration/test_directory_contract.py). Everything here can be rebuilt: a push
node's heartbeat (``beat``) costs the same for one connection as for a hundred thousand,
and tells the node when its records were lost (a flushed or restarted Redis, a node
reaped while it stalled); the node then re-asserts all its live connections
(``refresh_node``), so the directory heals within one heartbeat. A connection's presence
does not expire on its own: it is removed at disconnect, by the reaper once its node's
heartbeat expired, or when its node starts again (``reset_node``). Lookups only trust
connections whose node's heartbeat lives, so a crashed node stops being routed to when
its heartbeat expires.

Group membership itself is durable and lives in the store; the directory mirrors what
routing needs of it: per node, how many local connections read each group (and the
app's broadcast), so a group message goes only to nodes with members and once to each.

Raises ``herald.errors.Unavailable`` when the server cannot be reached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Presence:
    """One live connection. ``device`` and ``since`` are what presence queries show."""

    app_id: str
    user_id: str
    conn_id: str
    device: str | None = None
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Located:
    """One live connection as presence queries see it: where it is and since when."""

    conn_id: str
    node_id: str
    device: str | None
    since: float


# How long per-second message counts are kept (``count_messages``).
COUNTS_KEPT_S = 120


def average_rates(seconds: Iterable[Mapping[str, int | str]], window_s: int) -> dict[str, float]:
    """Messages per second per app from per-second counts (Redis gives them as strings)."""
    totals: dict[str, int] = {}
    for counts in seconds:
        for app_id, count in counts.items():
            totals[app_id] = totals.get(app_id, 0) + int(count)
    return {app_id: total / window_s for app_id, total in totals.items()}


def free_of_charge(cost: int, rate_per_s: float, burst: int) -> bool:
    """Whether ``take`` can answer without touching the bucket; a bucket without a rate or
    burst is a caller's bug, refused as one."""
    if rate_per_s <= 0 or burst < 1:
        raise ValueError(f"a token bucket needs rate_per_s > 0 and burst >= 1, not {rate_per_s}, {burst}")
    return cost <= 0


ChannelKey = tuple[str, str]  # (app_id, channel), channel being group:<name> or broadcast


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: float  # 0 when allowed


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What a push node says about itself at each heartbeat, for operators."""

    node_id: str
    connections: int
    by_app: dict[str, int]  # app_id -> connections
    queue_depth: int | None  # messages waiting in its bus queue; None when unknown
    at_ms: int = 0  # when it reported (wall clock), set by the node


@dataclass(frozen=True, slots=True)
class Beat:
    """What a node's heartbeat found: whether the node was still known alive, and how many
    connections the directory records for it (to compare with what the node holds)."""

    known: bool
    connections: int


class Directory(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Connect; raises Unavailable when the directory does not answer."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connections; nothing is asked of the directory afterwards."""

    @abstractmethod
    async def ping(self) -> None:
        """A round trip; raises Unavailable when the directory does not answer (readiness)."""

    @abstractmethod
    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> list[Presence]:
        """Route these connections' users to ``node_id`` (a node calls this at connect), and
        mark the node alive for ``ttl_s``. The connections stay until removed.

        Returns the connections that are their user's first (the user came online): the
        check and the write are one atomic step, so two nodes adding a user's first two
        connections at once report exactly one of them.
        """

    @abstractmethod
    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> list[Presence]:
        """Forget these connections (disconnect). Returns those that were their user's last
        (the user went offline), atomically as above."""

    @abstractmethod
    async def beat(self, node_id: str, ttl_s: float) -> Beat:
        """Heartbeat: mark the node alive for ``ttl_s``, whatever number of connections it holds.

        ``known`` False means its routes were lost (expired, flushed, removed) since the last
        heartbeat: messages dispatched in that window reached none of its connections live;
        the node must re-assert its connections (``refresh_node``) and catch those messages up.
        ``connections`` fewer than the node holds means some of its records were lost.
        """

    @abstractmethod
    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        """Mark the node alive for ``ttl_s`` and re-assert all its connections, reporting
        nobody online (they already were). Returns whether the node was still known alive,
        as ``beat`` does. O(connections): for start-up and after a loss, not every heartbeat.
        """

    @abstractmethod
    async def reset_node(self, node_id: str) -> list[Presence]:
        """A node starting under an id that may have been used before (a restart): forget
        every connection and channel route recorded under it, since none of them is live
        any more. Returns the forgotten connections that were their user's last, so the
        caller can announce those users offline."""

    @abstractmethod
    async def remove_node(self, node_id: str, conns: Sequence[Presence]) -> None:
        """A node leaving on purpose: it and its connections stop being routed to at once."""

    @abstractmethod
    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        """For each (app_id, user_id): the live nodes holding at least one of its connections.

        Recipients without any connection on a live node are absent from the result.
        One round trip (or two) for the whole list, whatever its length.
        """

    @abstractmethod
    async def live_nodes(self) -> list[str]:
        """Ids of the nodes whose heartbeat has not expired."""

    @abstractmethod
    async def reap_dead_nodes(self) -> list[Presence]:
        """Clean up after nodes whose heartbeat expired (crashed, not drained).

        Removes their connections, their channel counts and their registration. At most one
        caller reaps a given node (a claim with a TTL). Returns the reaped connections that
        were their user's last, so the caller can announce those users offline.
        """

    # Presence queries ---------------------------------------------------------
    @abstractmethod
    async def connections_of(self, app_id: str, user_id: str) -> list[Located]:
        """The user's connections on live nodes, oldest first."""

    @abstractmethod
    async def online(self, app_id: str, user_ids: Sequence[str] | None, limit: int) -> dict[str, int]:
        """Connection counts (on live nodes) of online users: of ``user_ids`` when given,
        else of the whole app (at most ``limit`` users, in user id order)."""

    # Channel routes (groups and broadcast) -------------------------------------
    @abstractmethod
    async def set_channel_counts(self, node_id: str, counts: Mapping[ChannelKey, int], ttl_s: float) -> None:
        """How many local connections of ``node_id`` read each channel; 0 removes the node
        from that channel's routes. Routes expire ``ttl_s`` after the last write, so every
        heartbeat re-asserts them: one write per channel the node reads, not per connection."""

    @abstractmethod
    async def nodes_for_channels(self, channels: Sequence[ChannelKey]) -> dict[ChannelKey, set[str]]:
        """For each channel: the live nodes with at least one reader. Absent: none."""

    # Rate limits ----------------------------------------------------------------
    @abstractmethod
    async def take(self, app_id: str, cost: int, rate_per_s: float, burst: int) -> RateDecision:
        """Token bucket per app, shared by every caller: take ``cost`` tokens if there are
        that many (refilled at ``rate_per_s`` up to ``burst``), else refuse and say when
        there will be. A refused call takes nothing."""

    # Operations -----------------------------------------------------------------------
    @abstractmethod
    async def report_node(self, report: NodeReport, ttl_s: float) -> None:
        """Record a node's report; reports of nodes that stop reporting vanish after
        ``ttl_s`` (a dead node is shown for a while, then forgotten)."""

    @abstractmethod
    async def node_reports(self) -> list[NodeReport]:
        """Every report still kept, by node id."""

    @abstractmethod
    async def count_messages(self, counts: Mapping[str, int], at_s: int) -> None:
        """Add per-app message counts to the wall-clock second ``at_s`` (kept two minutes)."""

    @abstractmethod
    async def message_rates(self, window_s: int, now_s: int) -> dict[str, float]:
        """Messages per second per app over the ``window_s`` whole seconds before ``now_s``."""
