"""A memory bus that records the control commands sent to push nodes and the events
published, for tests of the services that send them (revocation, kick, join, leave)
without a push node or an event consumer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from herald.adapters.bus.memory import MemoryBus
from herald.core import codec
from herald.core.commands import Command, decode


class NodeCommands(MemoryBus):
    """Every command queued to a node, by node id, in order, and every event's type and
    fields (the queues stay empty)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, list[Command]] = {}
        self.events: list[dict[str, Any]] = []

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        for node, body in bodies.items():
            self.sent.setdefault(node, []).extend(decode(codec.loads(body)["control"]))

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        self.events.append(codec.loads(body))
