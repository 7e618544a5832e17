"""A push node under connect and disconnect churn holds what a fresh node holds: every
per-connection, per-user, per-channel and per-message structure has its removal path."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.model import Message
from herald.services.push.node import PushNode
from herald.services.push.readers import Reader
from herald.services.push.socket import Socket
from tests.support.pushnode import APP, CountingStore, connect, settle

CYCLES = 150


@pytest.fixture
async def node() -> AsyncIterator[PushNode]:
    sqlite = SqliteStore(":memory:")
    await sqlite.start()
    bus = MemoryBus()
    await bus.start()
    node = PushNode("node-a", bus, MemoryDirectory(), CountingStore(sqlite), 10.0)  # type: ignore[arg-type]
    await bus.consume_node("node-a", node.handle)
    yield node
    await bus.close()
    await sqlite.close()


def sizes(node: PushNode) -> dict[str, int]:
    return {**node.core.sizes(), **node._reads.sizes(), **node._receipts.sizes(), "tasks": len(node._tasks)}


async def send(node: PushNode, channel: str, offset: int) -> None:
    now = time.time()
    message = Message(f"{channel}#{offset}", APP, channel, offset, "e", {}, int(now * 1000), now + 60)
    await node._store.store.insert_messages([message])  # type: ignore[attr-defined]
    await node.handle(b'{"messages":[' + _wire(message) + b"]}")


def _wire(message: Message) -> bytes:
    from herald.core import codec

    return codec.dumps(message.to_wire())


async def test_a_node_after_connect_and_disconnect_churn_holds_what_a_fresh_one_does(node: PushNode) -> None:
    await node._store.store.allocate_offsets(APP, {"group:ops": CYCLES})  # type: ignore[attr-defined]
    fresh = sizes(node)
    for cycle in range(CYCLES):
        user = f"u{cycle % 10}"
        await node._store.store.add_member(APP, "ops", user, 0, time.time())  # type: ignore[attr-defined]
        reader = await connect(node, user)
        await send(node, "group:ops", cycle + 1)
        node.core.ack(reader, "group:ops", cycle + 1)
        node.core.kick(APP, user, "some-other-token", "kicked", time.time())
        await settle(node)
        await node.detach(reader)
        del reader
    await settle(node)
    node.core.tick(time.time() + 120)  # kicks are remembered a minute, then forgotten
    await node.flush_receipts()
    gc.collect()
    assert sizes(node) == fresh
    alive = sum(isinstance(value, Reader) for value in gc.get_objects())
    assert alive == 0, f"{alive} readers are still referenced after their disconnect"


# Sockets ------------------------------------------------------------------------------------
# websockets' ServerProtocol keeps its parser, a generator whose frame holds the protocol
# (and during the handshake the request), and binds select_subprotocol to itself: once a
# socket is gone, nothing of it may be left for the cyclic collector, which the node runs
# rarely (GC_THRESHOLD). Checked with the collector off: what is not freed by reference
# counting the moment the socket goes is a leak until the next full collection.

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
CLIENT_CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # masked close frame, code 1000


class _Transport:
    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else None


class _Events:
    """Upgrades /ws, answers anything else with 404, as the push server does."""

    def accepted(self, sock: Any) -> None: ...

    def request(self, sock: Any, request: Any) -> None:
        if request.path == "/ws":
            sock.respond(sock.protocol.accept(request))
        else:
            sock.respond(sock.protocol.reject(404, "not found\n"))

    def message(self, sock: Any, data: str | bytes) -> None: ...

    def closing(self, sock: Any) -> bool:
        return False

    def lost(self, sock: Any) -> None: ...


def _no_subprotocol(_protocol: Any, _offered: Any) -> None:
    return None


async def _socket_life(*received: bytes) -> weakref.ref[Any]:
    """A socket that receives ``received`` and loses its TCP connection; a weak reference
    to its ServerProtocol."""
    sock = Socket(_Events(), 65536, _no_subprotocol)
    sock.close_timeout = 0  # the timer that makes sure a closing socket goes holds it that long
    sock.connection_made(_Transport())  # type: ignore[arg-type]
    for data in received:
        sock.data_received(data)
    sock.connection_lost(None)
    protocol = weakref.ref(sock.protocol)
    del sock
    await asyncio.sleep(0.01)
    return protocol


@pytest.mark.parametrize(
    "received",
    [
        pytest.param((UPGRADE,), id="upgraded, then cut without a close"),
        pytest.param((UPGRADE, CLIENT_CLOSE), id="upgraded, then closed by the client"),
        pytest.param((b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",), id="a plain HTTP request"),
        pytest.param((b"GET /ws HTTP/1.1\r\nHost: x\r\n",), id="cut in the middle of its request"),
        pytest.param((b"\x16\x03\x01 not http\r\n\r\n",), id="not HTTP at all"),
    ],
)
async def test_a_gone_socket_is_freed_by_reference_counting(no_collector: None, received: tuple[bytes, ...]) -> None:
    protocols = [await _socket_life(*received) for _ in range(CYCLES)]

    assert sum(protocol() is not None for protocol in protocols) == 0
