import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.core import receipts
from herald.core.errors import Unavailable
from herald.core.model import Delivery
from herald.services.push import receipt_buffer
from herald.services.push.receipt_buffer import ReceiptBuffer


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
