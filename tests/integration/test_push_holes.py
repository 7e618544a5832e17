"""A push node meeting a gap on a shared channel: it waits briefly for the missing message
to arrive live, and when it must read the store, reads it once for all the channel's readers."""

from __future__ import annotations

import asyncio
import time

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.core import codec
from herald.core.model import Message
from herald.services.push.node import PushNode
from herald.services.push.readers import Reader
from herald.services.push.sequencing import HOLE_GRACE_S

APP, GROUP = "app-1", "group:ops"
READERS = 50


class FakeSocket:
    """What the node needs of a socket: it is open and takes framed bytes."""

    open = True
    transport = None

    def __init__(self) -> None:
        self.written = b""

    def write_framed(self, data: bytes) -> bool:
        self.written += data
        return True

    def offsets(self) -> list[int]:
        found, data = [], self.written
        while data:
            length, start = data[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            found.append(codec.loads(data[start : start + length])["offset"])
            data = data[start + length :]
        return found


class CountingStore:
    """The store's read side, counting reads; the channel holds what ``messages`` holds."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.reads = 0

    async def read_channel(self, app_id: str, channel: str, after: int, limit: int, now: float) -> list[Message]:
        self.reads += 1
        await asyncio.sleep(0.01)  # a round trip: readers arriving meanwhile share it
        return [m for m in self.messages if m.channel == channel and m.offset > after][:limit]


def _message(offset: int) -> Message:
    return Message(
        id=f"m{offset}",
        app_id=APP,
        channel=GROUP,
        offset=offset,
        event="e",
        data={},
        ts=int(time.time() * 1000),
        expires_at=time.time() + 60,
    )


async def _node_with_readers(store: CountingStore) -> tuple[PushNode, list[FakeSocket]]:
    bus = MemoryBus()
    node = PushNode("node-a", bus, MemoryDirectory(), store, heartbeat_s=10)  # type: ignore[arg-type]
    await bus.consume_node("node-a", node.handle)  # a group's page waits for a barrier through it
    sockets = []
    for index in range(READERS):
        sock = FakeSocket()
        reader = Reader(sock, f"c{index}", APP, f"u{index}", None)
        node.readers.add(reader)
        node.readers.subscribe(reader, GROUP, 0)
        reader.started = True
        reader.sequence(GROUP).start(0, time.time())
        reader.sequence(GROUP).fetched([], time.time())
        sockets.append(sock)
    return node, sockets


def deliver(node: PushNode, message: Message) -> None:
    node.core.messages([message.to_wire()], time.time())
    node.soon()


async def test_a_message_overtaken_by_its_successor_is_delivered_in_order_without_a_read() -> None:
    store = CountingStore()
    node, sockets = await _node_with_readers(store)
    deliver(node, _message(2))
    deliver(node, _message(1))
    await asyncio.sleep(HOLE_GRACE_S * 3)
    assert all(sock.offsets() == [1, 2] for sock in sockets)
    assert store.reads == 0


async def test_a_gap_on_a_shared_channel_is_read_from_the_store_once_for_all_its_readers() -> None:
    store = CountingStore()
    store.messages = [_message(1)]  # stored, but its live delivery never reaches this node
    node, sockets = await _node_with_readers(store)
    deliver(node, _message(2))
    deadline = time.monotonic() + 5
    while not all(sock.offsets() == [1, 2] for sock in sockets) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert all(sock.offsets() == [1, 2] for sock in sockets)
    assert store.reads == 1
