"""The push node's keepalive sweep (services/push/socket.py), without sockets."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from herald.services.push.socket import PING_FRAME, Keepalive, Socket

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else None


class Upgrader:
    """Accepts every request, as the server does once a token checks out."""

    def accepted(self, sock: Socket) -> None: ...

    def request(self, sock: Socket, request: Request) -> None:
        sock.respond(sock.protocol.accept(request))

    def message(self, sock: Socket, data: str | bytes) -> None: ...

    def lost(self, sock: Socket) -> None: ...


def _none(_protocol: ServerProtocol, _offered: Sequence[Subprotocol]) -> Subprotocol | None:
    return None


def _socket(upgrade: bool) -> tuple[Socket, FakeTransport]:
    transport = FakeTransport()
    sock = Socket(Upgrader(), 65536, _none)
    sock.connection_made(transport)  # type: ignore[arg-type]
    if upgrade:
        sock.data_received(UPGRADE)
        assert sock.open
    transport.written.clear()
    return sock, transport


async def test_an_open_socket_heard_from_within_the_timeout_is_pinged() -> None:
    sock, transport = _socket(upgrade=True)
    closed = Keepalive(interval_s=10, timeout_s=20).sweep([sock], now=sock.last_seen + 15)
    assert closed == 0
    assert transport.written == [PING_FRAME]
    assert sock.open


async def test_an_open_socket_silent_past_the_timeout_is_closed_with_1011() -> None:
    sock, transport = _socket(upgrade=True)
    closed = Keepalive(interval_s=10, timeout_s=20).sweep([sock], now=sock.last_seen + 21)
    assert closed == 1
    assert not sock.open
    assert any(struct.pack("!H", 1011) + b"keepalive ping timeout" in data for data in transport.written)
    assert transport.closed


async def test_a_socket_still_in_its_http_request_is_left_to_the_handshake_gate() -> None:
    """The sweep neither pings nor drops it: the gate's deadline counts from accept, and a
    byte trickled now and then must not renew it (tests/unit/test_gate.py)."""
    sock, transport = _socket(upgrade=False)
    sock.data_received(b"GET /ws HTTP/1.1\r\n")
    Keepalive(interval_s=10, timeout_s=20).sweep([sock], now=sock.last_seen + 3600)
    assert not transport.aborted and transport.written == []


async def test_an_accepted_socket_knows_its_source_address() -> None:
    sock, _ = _socket(upgrade=False)
    assert sock.address == "127.0.0.1"
