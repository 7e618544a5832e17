"""The delivery core's decisions carried out: bytes to sockets, closes, receipts, reads.

Kept apart from the node so the order the core promises is visible in one place: writes
first (one per connection, however many messages it got this loop turn), then closes,
then routes, and only once the routes are written, the store reads that depend on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from herald.ops import metrics
from herald.services.push.decisions import Decisions, Read
from herald.services.push.delivery import DeliveryCore
from herald.services.push.readers import Reader
from herald.services.push.reads import StoreReads
from herald.services.push.receipt_buffer import ReceiptBuffer
from herald.services.push.routes import RouteKeeper

log = logging.getLogger("herald.push")

SEND_BUFFER_LIMIT = 1024 * 1024
SLOW_CLOSE_TIMEOUT_S = 10.0


def context(reader: Reader) -> dict[str, str]:
    """The log fields that say which connection a line is about."""
    return {"app_id": reader.app_id, "user_id": reader.user_id, "conn_id": reader.conn_id}


class Outlet:
    def __init__(
        self,
        core: DeliveryCore,
        receipts: ReceiptBuffer,
        routes: RouteKeeper,
        reads: StoreReads,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        again: Callable[[], None],
    ) -> None:
        """``again`` asks for the core's next decisions to be carried out too (a connection
        found over its buffer bound becomes a close decision)."""
        self._core = core
        self._receipts = receipts
        self._routes = routes
        self._reads = reads
        self._spawn = spawn
        self._again = again
        self.delivered = 0

    def carry_out(self, decisions: Decisions) -> None:
        for reader, chunks in decisions.writes.items():
            sock = reader.sink
            if sock is None:
                continue
            sock.write_framed(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            transport = sock.transport
            if transport is not None and transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
                log.warning("closing a slow consumer", extra=context(reader))
                self._core.overflowed(reader)
                self._again()
        for reader, code, reason in decisions.closes:
            self._close(reader, code, reason)
        self._record(decisions)
        if decisions.routes:
            self._spawn(self._route_then_read(decisions), "routes")
        else:
            for read in decisions.reads:
                self._spawn(self._read(read), "read")

    def _record(self, decisions: Decisions) -> None:
        if decisions.delivered:
            self.delivered += decisions.delivered
            metrics.messages_delivered.inc(decisions.delivered)
        if decisions.accepted_ms:
            now_ms = time.time() * 1000
            for accepted_ms in decisions.accepted_ms:
                metrics.delivery_latency.observe(max(0.0, now_ms - accepted_ms) / 1000)
        for delivery in decisions.deliveries:
            self._receipts.delivered(delivery)
        for reader, channel, offset in decisions.acks:
            metrics.messages_acked.inc()
            self._receipts.acked(reader.app_id, reader.user_id, reader.conn_id, channel, offset)
        for reader, channel, offset, message_id in decisions.traced:
            log.debug("wrote %s %d", channel, offset, extra={**context(reader), "message_id": message_id})

    def _close(self, reader: Reader, code: int, reason: str) -> None:
        sock = reader.sink
        log.info("closing with %d: %s", code, reason, extra=context(reader))
        if sock is None or not sock.open:
            return
        if code == 4008:
            # The close frame waits behind everything the client has not read yet;
            # give it time to get there before the connection is cut.
            sock.close_timeout = SLOW_CLOSE_TIMEOUT_S
        metrics.push_closes.labels(str(code)).inc()
        self._spawn(sock.close(code, reason), "close")

    async def _route_then_read(self, decisions: Decisions) -> None:
        """A channel's route is written before its backlog is read (``DeliveryCore.join``)."""
        await self._routes.write_counts(list(dict.fromkeys(decisions.routes)))
        for read in decisions.reads:
            self._spawn(self._read(read), "read")

    async def _read(self, read: Read) -> None:
        page = await self._reads.page(read.reader.app_id, read.channel, read.after)
        self._core.fetched(read, page, time.time())
        self._again()
