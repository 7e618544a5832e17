"""dispatch under churn holds what a fresh dispatch holds: nothing per user, node, app or
message outlives the batch that needed it (statuses written, rates flushed), recipients
connecting and disconnecting on two nodes, a store outage in the middle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from herald.adapters.bus.base import Bus
from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.base import Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.base import Store
from herald.core import codec
from herald.core.errors import Unavailable
from herald.services.dispatch.rate_counter import DispatchStats
from herald.services.dispatch.worker import DispatchWorker

CYCLES = 200


class Nodes(MemoryBus):
    """Counts what each node was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, int] = {}

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        for node, body in bodies.items():
            self.sent[node] = self.sent.get(node, 0) + len(codec.decode_batch(body))


class Statuses:
    """A store for status writes, down while ``outage`` is set."""

    def __init__(self) -> None:
        self.outage = False
        self.written = 0

    async def advance_status(self, message_ids: Sequence[str], status: str) -> None:
        if self.outage:
            raise Unavailable("MongoDB down")
        self.written += len(message_ids)


def _message(cycle: int) -> dict[str, Any]:
    user = f"u{cycle}"  # a new recipient each cycle: per-user state would pile up
    return {"id": f"m{cycle}", "app": f"app{cycle % 7}", "channel": f"user:{user}", "offset": 1, "data": None}


async def test_dispatch_after_connect_disconnect_churn_and_an_outage_holds_what_a_fresh_one_does() -> None:
    directory, bus, store = MemoryDirectory(), Nodes(), Statuses()
    stats = DispatchStats(directory, cast(Bus, bus), ())
    worker = DispatchWorker(cast(Bus, bus), directory, cast(Store, store), stats)
    fresh = worker.sizes()
    for cycle in range(CYCLES):
        message = _message(cycle)
        presence = Presence(message["app"], f"u{cycle}", f"c{cycle}", None, 0.0)
        node = f"n{cycle % 2}"
        await directory.add_connections(node, [presence], 30.0)
        store.outage = CYCLES // 3 <= cycle < CYCLES // 2
        await (await worker.handle([codec.encode_batch([message])]))
        await directory.remove_connections(node, [presence])
    await worker.close()
    await stats.flush()

    assert sum(bus.sent.values()) == CYCLES
    assert worker.sizes() == fresh
