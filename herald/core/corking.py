"""A loop turn's writes to one connection, kept and sent in one call.

On uvloop every write to an empty socket buffer is a ``send`` at once, and on loopback
the kernel charges the reader's wake-up to the writer: N writes of one turn cost N
system calls for what fits in one segment. ``TurnWrites`` keeps what a turn writes and
hands it to ``send`` from a callback the turn's first write schedules, so the writes
leave in their order and no later than the next pass of the loop; ``flush`` sends at
once (a close), and so does passing ``flush_at`` kept bytes. The AMQP connection's
writer (``herald.adapters.bus.amqp.corked``) and the HTTP servers' transport
(``herald.web.coalesced``) are built on it; each says how the kept writes leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class TurnWrites:
    __slots__ = ("_flush_at", "_kept", "_loop", "_send", "kept_bytes")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, send: Callable[[list[bytes]], None], flush_at: int | None = None
    ) -> None:
        self._loop = loop
        self._send = send
        self._flush_at = flush_at
        self._kept: list[bytes] = []
        self.kept_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._kept:
            self._loop.call_soon(self.flush)
        self._kept.append(data)
        self.kept_bytes += len(data)
        if self._flush_at is not None and self.kept_bytes >= self._flush_at:
            self.flush()

    def flush(self) -> None:
        """Send what is kept (nothing when it went out already)."""
        if not self._kept:
            return
        kept, self._kept, self.kept_bytes = self._kept, [], 0
        self._send(kept)
