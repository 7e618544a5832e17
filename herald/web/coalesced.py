"""uvicorn's HTTP protocol with a response's writes of one loop turn sent in one system call.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two ``send``
calls per response on uvloop, where every write to an empty buffer is a system call at
once, and on loopback the kernel charges the reader's wake-up to the writer. Herald's
answers are one start and one body sent back to back, so ``CoalescedTransport`` keeps
the writes of a turn and sends them together from a callback that the turn's first write
schedules: the same bytes in the same order, no later than the next pass of the loop.
Closing sends what is kept first, and so does a turn's writes passing ``FLUSH_AT``
bytes, so a large body reaches the transport (and its flow control: uvicorn pauses a
sender once the transport's buffer is over its high-water mark) as it would have.
Everything else is the wrapped transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Kept bytes past which a write goes out at once: far above a response head and an
# answer's body, far below the transport's default high-water mark (64 KiB).
FLUSH_AT = 16 * 1024


class CoalescedTransport:
    """A transport whose writes of one loop turn leave in one ``write``."""

    __slots__ = ("_kept", "_kept_bytes", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._kept: list[bytes] = []
        self._kept_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._kept:
            self._loop.call_soon(self.flush)
        self._kept.append(data)
        self._kept_bytes += len(data)
        if self._kept_bytes >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Send what this turn wrote (nothing when it went out already)."""
        if not self._kept:
            return
        kept, self._kept, self._kept_bytes = self._kept, [], 0
        if self._transport.is_closing():
            return
        self._transport.write(kept[0] if len(kept) == 1 else b"".join(kept))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._kept_bytes

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
