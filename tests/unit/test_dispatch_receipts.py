"""dispatch's receipts worker on a node's batch of acks, with recording stand-ins for store and bus."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import cast

from herald.adapters.bus.base import Bus
from herald.adapters.bus.memory import MemoryBus
from herald.adapters.store.base import Store
from herald.core import codec, receipts
from herald.core.model import Delivery
from herald.core.receipts import AckReport, ReceiptBatch
from herald.services.dispatch.receipt_writer import ReceiptsWorker


class Acks:
    """A store whose ack writes wait for ``writing``; it counts the writes in flight."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.started: list[str] = []
        self.stored: list[str] = []

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def record_ack(
        self, app_id: str, user_id: str, conn_id: str, positions: Mapping[str, int], at: float
    ) -> None:
        self.started.append(conn_id)
        await self.writing.wait()
        self.stored.append(conn_id)


class Events(MemoryBus):
    """Records acked events; while ``confirming`` is clear each publish waits for its confirm."""

    def __init__(self) -> None:
        super().__init__()
        self.confirming = asyncio.Event()
        self.published: list[tuple[str, int]] = []

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        event = codec.loads(body)
        self.published.append((event["conn_id"], event["offset"]))
        await self.confirming.wait()


def _batch(connections: int) -> bytes:
    acks = [AckReport("a1", f"u{n}", f"c{n}", {f"user:u{n}": n + 1}, 1.0) for n in range(connections)]
    return receipts.encode(ReceiptBatch(acks=acks))


async def _settle_loop() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_acks_of_a_batch_are_stored_concurrently() -> None:
    store, bus = Acks(), Events()
    bus.confirming.set()
    handling = asyncio.ensure_future(ReceiptsWorker(cast(Store, store), cast(Bus, bus)).handle(_batch(3)))

    await _settle_loop()

    assert store.started == ["c0", "c1", "c2"]
    assert store.stored == []
    store.writing.set()
    await handling


async def test_no_ack_event_is_published_before_every_ack_of_the_batch_is_stored() -> None:
    store, bus = Acks(), Events()
    bus.confirming.set()
    handling = asyncio.ensure_future(ReceiptsWorker(cast(Store, store), cast(Bus, bus)).handle(_batch(3)))

    await _settle_loop()
    assert bus.published == []
    store.writing.set()
    await handling

    assert bus.published == [("c0", 1), ("c1", 2), ("c2", 3)]


async def test_the_ack_events_of_a_batch_await_their_confirms_together() -> None:
    store, bus = Acks(), Events()
    store.writing.set()
    handling = asyncio.ensure_future(ReceiptsWorker(cast(Store, store), cast(Bus, bus)).handle(_batch(3)))

    await _settle_loop()

    assert bus.published == [("c0", 1), ("c1", 2), ("c2", 3)]
    assert not handling.done()
    bus.confirming.set()
    await handling
