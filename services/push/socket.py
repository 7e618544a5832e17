"""One client socket of a push node: HTTP request, upgrade, then frames, on websockets'
sans-I/O ``ServerProtocol`` under an ``asyncio.Protocol`` of our own.

Why not websockets' asyncio ``ServerConnection``: it keeps, per connection, a message
assembler with its futures, a keepalive task and a handler task: 12.6 KB per idle
connection without keepalive, 14.9 KB with it (docs/BENCHMARKS.md). A push node holds
tens of thousands of idle sockets; here an idle socket is this object, the protocol and
the transport (about 5 KB measured), frames are handled in ``data_received`` without a
task, and one node-wide sweep (``Keepalive``) pings every socket and closes the silent.
Sockets still in their handshake are the server's admission gate's
(``services.push.gate``): a deadline counted from accept, not from the last byte.

The library still does everything that is easy to get wrong: parsing the request,
validating the upgrade, parsing and limiting frames, answering pings, and the closing
handshake. We only move bytes and route events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from herald.services.push.framing import text_frame
from herald.services.push.request_head import parse_head
from herald.services.push.sansio import forget_request, read_frames, unlink_protocol

log = logging.getLogger("herald.push")

CLOSE_TIMEOUT_S = 2.0
# Bytes a socket waiting for its handshake turn (``hold``) may send before it is dropped:
# a request's head fits many times over; the event loop may read once before the pause.
MAX_HELD_BYTES = 64 * 1024
CLOSE_KEEPALIVE_TIMEOUT = 1011
CLOSE_INVALID_TEXT = 1007
PING_FRAME = b"\x89\x00"  # FIN + ping, unmasked, no payload

_websockets_log = logging.getLogger("websockets.server")


class SocketEvents(Protocol):
    """What the push server does with a socket's events (``services.push.server``)."""

    def accepted(self, sock: Socket) -> None:
        """A TCP connection was just accepted (``sock.address`` is its source): admit it,
        make it wait, or refuse it."""

    def request(self, sock: Socket, request: Request) -> None:
        """The HTTP request is parsed: answer it, or upgrade it and start the connection."""

    def message(self, sock: Socket, data: str | bytes) -> None:
        """A text or binary message from the client, reassembled from its fragments."""

    def closing(self, sock: Socket) -> bool:
        """The client sent a close frame. True: the answer must wait until ``release()``
        (the node persists the connection's acks first)."""

    def lost(self, sock: Socket) -> None:
        """The TCP connection is gone, however it ended."""


class Socket(asyncio.Protocol):
    __slots__ = (
        "_fragments",
        "_held",
        "_holding",
        "_lost",
        "_opcode",
        "_read_any",
        "_upgrade",
        "address",
        "budget",
        "close_timeout",
        "conn",
        "events",
        "gone",
        "inbox",
        "last_seen",
        "protocol",
        "transport",
        "waiter",
    )

    def __init__(
        self,
        events: SocketEvents,
        max_size: int,
        select_subprotocol: Callable[[ServerProtocol, Sequence[Subprotocol]], Subprotocol | None],
    ) -> None:
        self.events = events
        self.protocol = ServerProtocol(
            select_subprotocol=select_subprotocol,
            max_size=max_size,
            logger=_websockets_log,
        )
        self.transport: asyncio.Transport | None = None
        self.address = ""  # the peer's IP address
        self.close_timeout = CLOSE_TIMEOUT_S
        self.last_seen = time.monotonic()
        # The session once upgraded (services.push.sessions): the connection's Reader, the
        # client frames waiting while the server works for it (None when frames are
        # answered as they come), what waits for the first frame, and its frame budget.
        self.conn: Any = None
        self.inbox: list[str | bytes] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.budget: Any = None
        self.gone = False  # the TCP connection is closed
        self._held = False  # the answer to the client's close waits for release()
        self._lost: asyncio.Future[None] | None = None
        # Bytes read while the socket waits its turn (``hold``); None when it does not wait.
        self._holding: list[bytes] | None = None
        # A fragmented message being received: its opcode and the parts so far.
        self._opcode: Opcode | None = None
        self._fragments: list[bytes] | None = None
        # The 101 answer, kept until the first frame after it (``upgrade``).
        self._upgrade: bytes | None = None
        self._read_any = False  # bytes came: past the first, the request is websockets' to read

    # asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.address = peer_address(transport)
        self.events.accepted(self)

    def data_received(self, data: bytes) -> None:
        if self._holding is not None:
            self._keep(data)
            return
        self.last_seen = time.monotonic()
        protocol = self.protocol
        if not self._read_any:
            # A whole request head in the first bytes, as nearly every client sends it: read
            # without websockets' line-by-line parser (``request_head``); anything else,
            # and everything after the first bytes, is its parser's.
            self._read_any = True
            head = parse_head(data)
            if head is not None:
                request, data = head
                read_frames(protocol)
                self.events.request(self, request)
                if not data:
                    return
        protocol.receive_data(data)
        events = protocol.events_received()
        closed = False
        for event in events:
            if isinstance(event, Frame):
                if event.opcode is Opcode.CLOSE:
                    closed = True
                else:
                    self._frame(event)
            elif isinstance(event, Request):
                forget_request(protocol)
                self.events.request(self, event)
        # The frames before the close are handled first: acks sent just before closing count.
        if closed and not self._held and self.conn is not None and self.events.closing(self):
            self._held = True
        if self._held:
            return
        self.flush()
        if protocol.close_expected():
            self._close_later()

    def hold(self) -> None:
        """Read nothing until ``resume``: the socket waits its turn for a handshake. Bytes
        the event loop reads anyway (it may read once before a pause takes) are kept."""
        self._holding = []
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        held, self._holding = self._holding, None
        transport = self.transport
        if held is None or transport is None or transport.is_closing():
            return
        transport.resume_reading()
        for data in held:
            self.data_received(data)

    def _keep(self, data: bytes) -> None:
        assert self._holding is not None
        self._holding.append(data)
        if sum(len(part) for part in self._holding) > MAX_HELD_BYTES:
            self.abort()
        elif self.transport is not None:
            self.transport.pause_reading()

    def release(self) -> None:
        """Send the answer to the client's close, held by ``SocketEvents.closing``."""
        if not self._held:
            return
        self._held = False
        self.flush()
        if self.protocol.close_expected():
            self._close_later()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self.protocol.events_received()
        self.flush()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.protocol.receive_eof()
        unlink_protocol(self.protocol)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._lost = None
        self.events.lost(self)

    # Writing -----------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.protocol.state is State.OPEN

    def flush(self) -> None:
        """Write what the protocol produced; its end-of-stream marker means close the TCP
        connection once the rest is out (the server closes first, RFC 6455 7.1.1)."""
        transport = self.transport
        if transport is None:
            return
        chunks = self.protocol.data_to_send()
        if chunks and self._upgrade is not None:
            self.uncork()
        for data in chunks:
            if data:
                transport.write(data)
            else:
                transport.close()

    def write_framed(self, data: bytes) -> bool:
        """Write frames already built (``herald.framing``): the same bytes for every socket."""
        transport = self.transport
        if self.protocol.state is not State.OPEN or transport is None or transport.is_closing():
            return False
        if self._upgrade is not None:
            data, self._upgrade = self._upgrade + data, None
        transport.write(data)
        return True

    def send_text(self, text: str | bytes) -> bool:
        return self.write_framed(text_frame(text.encode() if isinstance(text, str) else text))

    def respond(self, response: Response) -> None:
        """The answer to the HTTP request: an upgrade (101) or a plain response, after which
        the protocol asks for the connection to close."""
        self.protocol.send_response(response)
        self.flush()

    def upgrade(self, response: Response) -> None:
        """Answer 101 with the first frame written after it (the welcome): one system call
        for both instead of two, on loopback each also charged the client's wake-up. A
        flush (a pong, a close) or ``uncork`` sends it on its own first."""
        self.protocol.send_response(response)
        self._upgrade = b"".join(self.protocol.data_to_send())

    def uncork(self) -> None:
        """Send the 101 answer if it is still kept."""
        upgrade, self._upgrade = self._upgrade, None
        if upgrade and self.transport is not None and not self.transport.is_closing():
            self.transport.write(upgrade)

    def ping(self) -> None:
        """An empty ping. Server frames are unmasked, so its bytes are the same for every
        socket; the sans-I/O protocol keeps no record of pings sent, so nothing is skipped."""
        self.write_framed(PING_FRAME)

    def fail(self, code: int, reason: str) -> None:
        """Close at once with ``code``, without waiting for anything the client says."""
        self.protocol.fail(code, reason)
        self.flush()
        self._close_later()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait for the client's answer (or the TCP close)
        up to ``close_timeout``, then cut the connection."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self.flush()
        await self.wait_lost(self.close_timeout)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_lost(self, timeout_s: float) -> None:
        """Until the connection is gone; aborted after ``timeout_s``."""
        transport = self.transport
        if transport is None or self.protocol.state is State.CLOSED:
            return
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout_s)
        except TimeoutError:
            transport.abort()

    # Reading -----------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(opcode, bytes(frame.data))
            else:
                self._opcode, self._fragments = opcode, [bytes(frame.data)]
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                first, data = self._opcode, b"".join(self._fragments)
                self._opcode = self._fragments = None
                assert first is not None  # set with the first fragment
                self._deliver(first, data)
        # Pings are answered and closes handled by the protocol; pongs only prove liveness.

    def _deliver(self, opcode: Opcode, data: bytes) -> None:
        if opcode is Opcode.BINARY:
            self.events.message(self, data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.fail(CLOSE_INVALID_TEXT, "invalid UTF-8 in a text frame")
            return
        self.events.message(self, text)

    def _close_later(self) -> None:
        """The protocol expects the TCP connection to close: make sure it does."""
        if self.transport is not None:
            asyncio.get_running_loop().call_later(self.close_timeout, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.transport is not None and self.protocol.state is not State.CLOSED:
            self.transport.abort()


class Keepalive:
    """Node-wide keepalive: one pass every ``interval_s`` pings each open socket and closes
    those that sent nothing (no pong, no frame) for ``timeout_s``. Replaces one task per
    connection. Sockets still in their handshake are left to the admission gate, whose
    deadline counts from accept: a byte trickled now and then must not keep one alive."""

    def __init__(self, interval_s: float, timeout_s: float) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s

    def sweep(self, sockets: Iterable[Socket], now: float) -> int:
        """Ping or close every socket; returns how many were closed for silence."""
        closed = 0
        for sock in list(sockets):
            if sock.protocol.state is State.OPEN:
                if now - sock.last_seen > self.timeout_s:
                    closed += 1
                    sock.fail(CLOSE_KEEPALIVE_TIMEOUT, "keepalive ping timeout")
                else:
                    sock.ping()
        return closed

    async def run(self, sockets: Callable[[], Iterable[Socket]]) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                closed = self.sweep(sockets(), time.monotonic())
            except Exception:  # the sweep must outlive any one socket's surprise
                log.exception("keepalive sweep failed")
                continue
            if closed:
                log.info("closed %d connections that missed their heartbeats", closed)


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The client's IP as the kernel saw it (not a header a client could write); "" if none."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
