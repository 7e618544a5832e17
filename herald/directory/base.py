"""The directory: who is connected where, right now. Fast, shared, and allowed to forget.

Redis for clusters, in-process dicts for standalone; one specification
(tests/integration/test_directory_contract.py). Everything here can be rebuilt: every
push node re-asserts its live connections at each heartbeat (``refresh_node``), so a
flushed or restarted Redis heals within one heartbeat, and a crashed node's routes stop
being returned once its heartbeat key expires.

Raises ``herald.errors.Unavailable`` when the server cannot be reached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Presence:
    """One live connection."""

    app_id: str
    user_id: str
    conn_id: str


class Directory(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> None:
        """Route these connections' users to ``node_id`` (a node calls this at connect)."""

    @abstractmethod
    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> None:
        """Forget these connections (disconnect)."""

    @abstractmethod
    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        """Heartbeat: mark the node alive for ``ttl_s`` and re-assert all its connections.

        Returns whether the node was still known alive. False means its routes were lost
        (expired, flushed, removed) since the last heartbeat: messages dispatched in that
        window reached none of its connections live, and the node must catch them up.
        """

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
