import asyncio

import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.core import receipts
from herald.core.errors import Unavailable
from herald.core.model import Delivery
from herald.services.push import node as push_node
from herald.services.push import receipt_buffer
from herald.services.push.receipt_buffer import ReceiptBuffer
from tests.support.pushnode import counting_sqlite


class RefusingBus(MemoryBus):
    async def publish_receipts(self, body: bytes) -> None:
        raise Unavailable("broker down")


class RecordingBus(MemoryBus):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    async def publish_receipts(self, body: bytes) -> None:
        self.bodies.append(body)


def _delivery(n: int) -> Delivery:
    return Delivery(f"m{n}", "a1", "user:7", n, "c1", None, float(n))


async def test_acks_merge_to_the_highest_offset_per_connection_and_channel() -> None:
    buffer = ReceiptBuffer()
    for offset in (3, 5, 4):
        buffer.acked("a1", "7", "c1", "user:7", offset)
    bus = RecordingBus()
    await buffer.flush(bus)
    [ack] = receipts.decode(bus.bodies[0]).acks
    assert ack.positions == {"user:7": 5}


async def test_pending_positions_cover_every_connection_of_the_user() -> None:
    buffer = ReceiptBuffer()
    buffer.acked("a1", "7", "c1", "user:7", 3)
    buffer.acked("a1", "7", "c2", "user:7", 6)
    buffer.acked("a1", "8", "c3", "user:8", 9)
    assert buffer.pending_positions("a1", "7") == {"user:7": 6}


async def test_a_refused_flush_keeps_everything_for_the_next_one() -> None:
    buffer = ReceiptBuffer()
    buffer.delivered(_delivery(1))
    buffer.acked("a1", "7", "c1", "user:7", 1)
    await buffer.flush(RefusingBus())
    buffer.delivered(_delivery(2))
    bus = RecordingBus()
    await buffer.flush(bus)
    batch = receipts.decode(bus.bodies[0])
    assert [d.offset for d in batch.deliveries] == [1, 2]
    assert [a.positions for a in batch.acks] == [{"user:7": 1}]


async def test_a_flush_of_deliveries_alone_keeps_the_acks_merging_for_the_tick() -> None:
    buffer = ReceiptBuffer()
    buffer.delivered(_delivery(1))
    buffer.acked("a1", "7", "c1", "user:7", 1)
    bus = RecordingBus()
    await buffer.flush(bus, acks=False)
    buffer.acked("a1", "7", "c1", "user:7", 2)
    await buffer.flush(bus)
    first, second = (receipts.decode(body) for body in bus.bodies)
    assert ([d.offset for d in first.deliveries], first.acks) == ([1], [])
    assert (second.deliveries, [a.positions for a in second.acks]) == ([], [{"user:7": 2}])


async def test_a_refused_flush_of_deliveries_alone_keeps_them_and_the_acks() -> None:
    buffer = ReceiptBuffer()
    buffer.delivered(_delivery(1))
    buffer.acked("a1", "7", "c1", "user:7", 1)
    await buffer.flush(RefusingBus(), acks=False)
    assert buffer.sizes() == {"pending_acks": 1, "pending_deliveries": 1}


async def test_nothing_to_report_publishes_nothing() -> None:
    bus = RecordingBus()
    await ReceiptBuffer().flush(bus)
    assert bus.bodies == []


async def test_acks_kept_while_the_bus_refuses_are_bounded_by_connections_oldest_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receipt_buffer, "MAX_PENDING_ACK_CONNECTIONS", 3)
    buffer = ReceiptBuffer()
    refusing = RefusingBus()
    for conn in range(5):
        buffer.acked("a1", "7", f"c{conn}", "user:7", conn + 1)
        await buffer.flush(refusing)
    bus = RecordingBus()
    await buffer.flush(bus)
    assert [a.conn_id for a in receipts.decode(bus.bodies[0]).acks] == ["c2", "c3", "c4"]
    assert buffer.dropped_acks == 2
    assert buffer.sizes() == {"pending_acks": 0, "pending_deliveries": 0}


async def test_a_node_sends_its_deliveries_between_ticks_and_its_acks_with_the_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(push_node, "TICK_S", 0.4)
    monkeypatch.setattr(push_node, "DELIVERIES_EVERY_S", 0.1)
    bus = RecordingBus()
    await bus.start()
    async with counting_sqlite() as store:
        node = push_node.PushNode("node-r", bus, MemoryDirectory(), store, 10.0)  # type: ignore[arg-type]
        await node.start()
        try:
            node._receipts.delivered(_delivery(1))
            node._receipts.acked("a1", "7", "c1", "user:7", 1)
            for _ in range(200):  # bounded: 2 s at most
                if any(receipts.decode(body).acks for body in bus.bodies):
                    break
                await asyncio.sleep(0.01)
        finally:
            await node.stop()
    batches = [receipts.decode(body) for body in bus.bodies]
    first_acks = next(n for n, batch in enumerate(batches) if batch.acks)
    assert [d.offset for d in batches[0].deliveries] == [1]
    assert batches[0].acks == []
    assert first_acks > 0, "the acks waited for the tick"
