"""A memory bus that records the control commands sent to push nodes, for tests of the
services that send them (revocation, kick, join, leave) without a push node."""

from __future__ import annotations

from collections.abc import Mapping

from herald.adapters.bus.memory import MemoryBus
from herald.core import codec
from herald.core.commands import Command, decode


class NodeCommands(MemoryBus):
    """Every command queued to a node, by node id, in order (the queues stay empty)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, list[Command]] = {}

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        for node, body in bodies.items():
            self.sent.setdefault(node, []).extend(decode(codec.loads(body)["control"]))
