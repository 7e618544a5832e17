"""uvicorn's HTTP protocol with a response's writes of one loop turn sent in one system call.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two ``send``
calls per response on uvloop, where every write to an empty buffer is a system call at
once, and on loopback the kernel charges the reader's wake-up to the writer. Herald's
answers are one start and one body sent back to back, so ``CoalescedTransport`` keeps
the writes of a turn and sends them together (``herald.core.corking``): the same bytes in
the same order, no later than the next pass of the loop.
Closing sends what is kept first, and so does a turn's writes passing ``FLUSH_AT``
bytes, so a large body reaches the transport (and its flow control: uvicorn pauses a
sender once the transport's buffer is over its high-water mark) as it would have.
Everything else is the wrapped transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from herald.core.corking import TurnWrites

# Kept bytes past which a write goes out at once: far above a response head and an
# answer's body, far below the transport's default high-water mark (64 KiB).
FLUSH_AT = 16 * 1024


class CoalescedTransport:
    """A transport whose writes of one loop turn leave in one ``write``."""

    __slots__ = ("_transport", "_turn")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._turn = TurnWrites(loop, self._send, flush_at=FLUSH_AT)

    def write(self, data: bytes) -> None:
        self._turn.write(data)

    def flush(self) -> None:
        """Send what this turn wrote (nothing when it went out already)."""
        self._turn.flush()

    def _send(self, kept: list[bytes]) -> None:
        if not self._transport.is_closing():
            self._transport.write(kept[0] if len(kept) == 1 else b"".join(kept))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._turn.kept_bytes

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a ``CoalescedTransport``.

    Flow control (pausing reads, the write buffer's marks) stays on the real transport:
    uvicorn's ``FlowControl`` is built from it before the swap.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescedTransport(transport, self.loop)  # type: ignore[assignment]
