"""Slow handshakes: sockets that trickle their HTTP request cannot hold a push node.

The attack: open sockets, send a request line, then a header line every so often and
never finish. Before the admission gate, the node refreshed a socket's last-seen time on
every byte, so 300 of them stayed open for as long as they liked. Now the deadline counts
from accept, one address has only its share of handshakes read at once, the oldest
handshakes make room for newcomers, and the node holds at most HERALD_MAX_CONNECTIONS
sockets. Sources are distinct loopback addresses (127.0.0.x), as distinct clients are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

from herald_client import Publisher
from tests.support.edges import metric, running
from tests.support.procs import Standalone
from tests.support.rawws import closed_within, open_tcp, read_head
from tests.support.ws import next_frame, open_ws

DEADLINE_S = 2.0
MAX_HANDSHAKES = 400
PER_ADDRESS = 32
ENV = {
    "HERALD_HANDSHAKE_TIMEOUT_S": str(DEADLINE_S),
    "HERALD_MAX_HANDSHAKES": str(MAX_HANDSHAKES),
    "HERALD_MAX_HANDSHAKES_PER_ADDRESS": str(PER_ADDRESS),
}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with running(tmp_path_factory.mktemp("handshakes"), ENV) as herald:
        yield herald


def _port(standalone: Standalone) -> int:
    return standalone.port_base + 4


async def _slow_sockets(port: int, count: int, first_source: int, per_source: int) -> list[Conn]:
    """``count`` sockets that sent a request line and nothing more, ``per_source`` from each
    of 127.0.0.<first_source>, <first_source + 1>, ..., opened in order."""
    conns: list[Conn] = []
    for index in range(count):
        reader, writer = await open_tcp(port, f"127.0.0.{first_source + index // per_source}")
        writer.write(b"GET /ws HTTP/1.1\r\n")
        conns.append((reader, writer))
    return conns


async def _trickle(conns: list[Conn], every_s: float, until: float) -> None:
    """One more header line on every socket each ``every_s``: bytes keep coming, forever."""
    line = 0
    while time.monotonic() < until:
        line += 1
        for _, writer in conns:
            if not writer.is_closing():
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(f"X-Slow-{line}: still typing\r\n".encode())
        await asyncio.sleep(every_s)


def _close(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()


async def _real_user_connect_s(standalone: Standalone, publisher: Publisher, user: str) -> float:
    """Seconds from opening the socket to the welcome frame."""
    token = await publisher.token(user)
    started = time.monotonic()
    ws = await open_ws(standalone.ws_url, token, how="header")
    await next_frame(ws, "welcome", timeout_s=5)
    took = time.monotonic() - started
    await ws.close()
    return took


async def test_sockets_trickling_their_handshake_are_dropped_at_the_deadline_from_accept(
    standalone: Standalone, publisher: Publisher
) -> None:
    opened = time.monotonic()
    conns = await _slow_sockets(_port(standalone), 300, first_source=2, per_source=30)
    trickling = asyncio.create_task(_trickle(conns, every_s=0.5, until=opened + DEADLINE_S + 3))
    try:
        assert await _real_user_connect_s(standalone, publisher, "alice") < 1.0
        await asyncio.sleep(max(0.0, opened + DEADLINE_S + 1.5 - time.monotonic()))
        still_open = [conn for conn in conns if not await closed_within(conn[0], 0.05)]
        assert still_open == [], f"{len(still_open)} of 300 slow handshakes outlived the deadline"
    finally:
        trickling.cancel()
        _close(conns)
    assert await metric(standalone, "herald_push_sockets_dropped_total", reason="deadline") >= 300


async def test_one_address_has_only_its_share_of_handshakes_read_at_once(standalone: Standalone) -> None:
    port = _port(standalone)
    slow = await _slow_sockets(port, PER_ADDRESS, first_source=20, per_source=PER_ADDRESS)
    await asyncio.sleep(1.0)
    reader, writer = await open_tcp(port, "127.0.0.20")
    writer.write(HEALTHZ)
    try:
        with pytest.raises(TimeoutError):
            await read_head(reader, timeout_s=0.8)  # its turn has not come: its address is full
        other_reader, other_writer = await open_tcp(port, "127.0.0.21")
        other_writer.write(HEALTHZ)
        assert (await read_head(other_reader, timeout_s=1.0))[0] == 200  # another address: at once
        other_writer.close()
        # The slow ones reach their deadline; the waiting request gets its turn and its answer.
        assert (await read_head(reader, timeout_s=DEADLINE_S + 1))[0] == 200
    finally:
        writer.close()
        _close(slow)


async def test_past_the_node_cap_the_oldest_handshakes_go_and_a_real_user_gets_in(
    standalone: Standalone, publisher: Publisher
) -> None:
    extra = 50
    conns = await _slow_sockets(_port(standalone), MAX_HANDSHAKES + extra, first_source=40, per_source=30)
    try:
        oldest_gone = [await closed_within(reader, 1.0) for reader, _ in conns[:extra]]
        assert all(oldest_gone), f"{oldest_gone.count(False)} of the {extra} oldest handshakes still open"
        assert not await closed_within(conns[-1][0], 0.1)  # the newest are still there, before the deadline
        assert await _real_user_connect_s(standalone, publisher, "bob") < 1.0
    finally:
        _close(conns)
    assert await metric(standalone, "herald_push_sockets_dropped_total", reason="evicted") >= extra


async def test_past_the_connection_cap_a_newcomer_is_answered_503_node_full(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running(tmp_path_factory.mktemp("capped"), {"HERALD_MAX_CONNECTIONS": "30"}) as capped:
        port = _port(capped)
        held = [await open_tcp(port, f"127.0.0.{60 + index}") for index in range(30)]
        try:
            # Answered at accept, before the request is read (a request sent at once may
            # be reset by the close, the answer unread): so this newcomer sends nothing.
            reader, writer = await open_tcp(port, "127.0.0.100")
            status, _ = await read_head(reader, timeout_s=2)
            body = await asyncio.wait_for(reader.read(), 2)
            writer.close()
            assert status == 503 and b"node_full" in body
        finally:
            _close(held)
        await asyncio.sleep(0.3)  # the node notices the closed sockets
        reader, writer = await open_tcp(port, "127.0.0.100")
        writer.write(HEALTHZ)
        assert (await read_head(reader, timeout_s=2))[0] == 200
        writer.close()
