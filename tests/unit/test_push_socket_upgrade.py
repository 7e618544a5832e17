"""The 101 answer leaves with the welcome in one write, and never after anything else."""

from __future__ import annotations

from typing import Any

from herald.services.push.socket import Socket
from tests.unit.test_push_churn import UPGRADE, _no_subprotocol, _Transport

CLIENT_PING = b"\x89\x80\x00\x00\x00\x00"  # masked ping, no payload


class _Writes(_Transport):
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


class _Upgrades:
    """Keeps the 101 as the push server does (``Socket.upgrade``), writes nothing else."""

    def accepted(self, sock: Any) -> None: ...

    def request(self, sock: Any, request: Any) -> None:
        sock.upgrade(sock.protocol.accept(request))

    def message(self, sock: Any, data: str | bytes) -> None: ...

    def closing(self, sock: Any) -> bool:
        return False

    def lost(self, sock: Any) -> None: ...


def _upgraded() -> tuple[Socket, _Writes]:
    sock = Socket(_Upgrades(), 65536, _no_subprotocol)
    transport = _Writes()
    sock.connection_made(transport)  # type: ignore[arg-type]
    sock.data_received(UPGRADE)
    return sock, transport


def test_the_upgrade_answer_waits_for_the_first_frame_and_leaves_with_it() -> None:
    sock, transport = _upgraded()
    assert transport.writes == []

    sock.send_text('{"type":"welcome"}')

    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert written.endswith(b'\r\n\r\n\x81\x12{"type":"welcome"}')


def test_uncork_sends_the_upgrade_answer_alone_and_only_once() -> None:
    sock, transport = _upgraded()

    sock.uncork()
    sock.uncork()
    sock.send_text("x")

    assert len(transport.writes) == 2
    assert transport.writes[0].startswith(b"HTTP/1.1 101")
    assert transport.writes[1] == b"\x81\x01x"


def test_a_pong_to_an_early_client_ping_follows_the_upgrade_answer() -> None:
    sock, transport = _upgraded()

    sock.data_received(CLIENT_PING)

    assert transport.writes[0].startswith(b"HTTP/1.1 101")
    assert transport.writes[1] == b"\x8a\x00"


async def test_a_close_before_the_welcome_sends_the_upgrade_answer_first() -> None:
    sock, transport = _upgraded()
    sock.close_timeout = 0.01

    await sock.close(1013, "store unavailable")

    assert transport.writes[0].startswith(b"HTTP/1.1 101")
    assert transport.writes[1][:2] == b"\x88\x13"  # close frame: code 1013 and the reason
