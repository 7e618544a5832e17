"""A push node: writes routed messages to its local sockets, keeps its routes alive, saves acks.

Delivery is synchronous per bus body: each message's frame is encoded once per node and
written to every local connection of its recipient without awaiting any socket, so one
slow client never delays the others. What each connection gets, and when the store must
fill a gap or a backlog, is decided by ``herald.sequencing``; the node only carries the
decisions out. A client whose unsent output passes ``SEND_BUFFER_LIMIT`` bytes, or whose
held messages pass ``MAX_HELD``, is closed with 4008 and resumes later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from websockets.asyncio.server import broadcast
from websockets.protocol import State

from herald import codec, metrics, runtime
from herald.bus.base import Bus
from herald.directory.base import Directory
from herald.errors import Unavailable
from herald.model import Delivery, parse_channel
from herald.protocol import CLOSE_SLOW_CONSUMER, message_frame
from herald.sequencing import PAGE, Step
from herald.store.base import Store
from services.push.connections import Connection, LocalConnections
from services.push.receipts import ReceiptBuffer

log = logging.getLogger("herald.push")

SEND_BUFFER_LIMIT = 1024 * 1024
SLOW_CLOSE_TIMEOUT_S = 10.0
# Acks are flushed, and waits on missing offsets checked, this often.
TICK_S = 1.0
STORE_RETRY_S = 1.0
# Store reads in flight at once: a catch-up of every connection must not flood the store.
MAX_CONCURRENT_FETCHES = 16
# How long a lost broker subscription may stay lost (a broker restart takes seconds)
# before the node exits non-zero for its supervisor to restart it.
RECOVERY_BUDGET_S = 60.0


class PushNode:
    def __init__(self, node_id: str, bus: Bus, directory: Directory, store: Store, heartbeat_s: float) -> None:
        self.node_id = node_id
        self.connections = LocalConnections()
        self._bus = bus
        self._directory = directory
        self._store = store
        self.routable = False
        self._lost_since: float | None = None
        self._fetch_slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self._heartbeat_s = heartbeat_s
        self._receipts = ReceiptBuffer()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._holes: set[tuple[Connection, str]] = set()
        self.delivered = 0

    # Bus side ---------------------------------------------------------------
    async def handle(self, body: bytes) -> None:
        """The bus handler for this node's queue."""
        try:
            messages = codec.decode_batch(body)
        except ValueError as exc:
            log.error("dropping an unreadable node body (%d bytes): %s", len(body), exc)
            return
        metrics.push_bus_messages.inc(len(messages))
        self.deliver(messages)

    def deliver(self, messages: Iterable[dict[str, Any]]) -> None:
        now = time.time()
        frames: dict[str, bytes] = {}
        for message in messages:
            kind, name = parse_channel(message["channel"])
            if kind != "user":
                continue
            for conn in list(self.connections.of_user(message["app"], name)):
                self._apply(conn, message["channel"], conn.sequence(message["channel"]).live(message, now), frames)

    def _apply(self, conn: Connection, channel: str, step: Step, frames: dict[str, bytes]) -> None:
        """Carry out a sequencing decision: write, read the store, or close an overflowing client."""
        if conn.closing:
            return
        if step.overflow:
            self._close_soon(conn, CLOSE_SLOW_CONSUMER, "slow consumer: resume later")
            return
        if step.write:
            now = time.time()
            for message in step.write:
                frame = frames.get(message["id"])
                if frame is None:
                    frame = frames[message["id"]] = message_frame(message).encode()
                broadcast([conn.ws], frame, text=True)
                self._receipts.delivered(
                    Delivery(message["id"], conn.app_id, channel, message["offset"], conn.conn_id, conn.device, now)
                )
            self.delivered += len(step.write)
            metrics.push_frames_sent.inc(len(step.write))
            self._bound_output(conn)
        if step.fetch_after is not None:
            self._spawn(self._fetch(conn, channel, step.fetch_after), f"fetch-{conn.conn_id}")
        if conn.sequence(channel).hole_since is not None:
            self._holes.add((conn, channel))

    async def _fetch(self, conn: Connection, channel: str, after: int) -> None:
        """Read the store for what the connection misses; retried while the store is down."""
        while conn.ws.protocol.state is State.OPEN:
            try:
                async with self._fetch_slots:
                    page = await self._store.read_channel(conn.app_id, channel, after, PAGE, time.time())
            except Unavailable:
                await asyncio.sleep(STORE_RETRY_S)
                continue
            wires = [message.to_wire() for message in page]
            self._apply(conn, channel, conn.sequence(channel).fetched(wires, time.time()), {})
            return

    def begin(self, conn: Connection, positions: dict[str, int]) -> None:
        """Start (or restart) the connection's channels after the given positions."""
        now = time.time()
        for channel, position in positions.items():
            self._apply(conn, channel, conn.sequence(channel).start(position, now), {})

    def _bound_output(self, conn: Connection) -> None:
        transport = conn.ws.transport
        if transport is not None and transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            log.warning("closing a slow consumer", extra={"conn_id": conn.conn_id, "app_id": conn.app_id})
            self._close_soon(conn, CLOSE_SLOW_CONSUMER, "slow consumer: resume later")

    def _close_soon(self, conn: Connection, code: int, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        if conn.ws.protocol.state is State.OPEN:
            if code == CLOSE_SLOW_CONSUMER:
                # The close frame waits behind everything the client has not read yet;
                # give it time to get there before the connection is cut.
                conn.ws.close_timeout = SLOW_CLOSE_TIMEOUT_S
            metrics.push_closes.labels(str(code)).inc()
            self._spawn(conn.ws.close(code, reason), f"close-{conn.conn_id}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tick_holes(self) -> None:
        now = time.time()
        for conn, channel in list(self._holes):
            sequence = conn.sequences.get(channel)
            if sequence is None or sequence.hole_since is None or conn.ws.protocol.state is not State.OPEN:
                self._holes.discard((conn, channel))
                continue
            self._apply(conn, channel, sequence.tick(now), {})

    # Connection side --------------------------------------------------------
    async def attach(self, conn: Connection, welcome: str) -> None:
        """Greet the connection and route its user here: locally, then in the shared directory.

        The welcome is written in the same step as the local registration, with no await
        between them, so it is always the first frame: any message delivered after it
        follows it on the wire.
        """
        broadcast([conn.ws], welcome)
        self.connections.add(conn)
        metrics.push_connections.set(len(self.connections))
        try:
            await self._directory.add_connections(self.node_id, [conn.presence], self._heartbeat_s * 3)
        except Unavailable:
            # The next heartbeat re-asserts every local connection; until then live
            # messages for this user may miss this node and are recovered on resume.
            log.warning("directory unavailable at connect", extra={"conn_id": conn.conn_id})

    async def detach(self, conn: Connection) -> None:
        for channel in conn.sequences:
            self._holes.discard((conn, channel))
        if not self.connections.remove(conn):
            return
        metrics.push_connections.set(len(self.connections))
        try:
            await self._directory.remove_connections(self.node_id, [conn.presence])
        except Unavailable:
            log.warning("directory unavailable at disconnect", extra={"conn_id": conn.conn_id})

    def record_ack(self, conn: Connection, channel: str, offset: int) -> None:
        self._receipts.acked(conn.app_id, conn.user_id, conn.conn_id, channel, offset)

    async def positions(self, app_id: str, user_id: str) -> dict[str, int]:
        """The user's acknowledged positions, including acks not flushed yet."""
        stored = await self._store.get_cursors(app_id, user_id)
        for channel, offset in self._receipts.pending_positions(app_id, user_id).items():
            stored[channel] = max(offset, stored.get(channel, 0))
        return stored

    # Node-wide loops --------------------------------------------------------
    async def start(self) -> None:
        await self._bus.consume_node(self.node_id, self.handle)
        await self._directory.refresh_node(self.node_id, [], self._heartbeat_s * 3)
        self.routable = True
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="push-heartbeat"))
        self._loops.append(asyncio.create_task(self._tick_loop(), name="push-tick"))

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.flush_receipts()
        await self.withdraw()
        await self._bus.stop_consuming()

    async def withdraw(self) -> None:
        """Stop being routed to: dispatch forgets this node at once (drain, dead consumer)."""
        self.routable = False
        with contextlib.suppress(Unavailable):
            await self._directory.remove_node(self.node_id, self.connections.presences())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if not self._bus.consuming():
                await self._recover_subscription()
            if not self.routable:
                continue
            try:
                known = await self._directory.refresh_node(
                    self.node_id, self.connections.presences(), self._heartbeat_s * 3
                )
            except Unavailable as exc:
                log.warning("heartbeat failed: %s", exc.message)
                continue
            if not known:
                log.warning("this node's routes were lost (directory flushed or expired); catching up")
                self.catch_up_all()

    async def _recover_subscription(self) -> None:
        """The broker consumer is gone (channel closed, consumer cancelled, broker restarting):
        messages routed here would pile up unread. Leave routing and subscribe again; exit
        non-zero if that keeps failing, so a supervisor restarts the node."""
        if self.routable:
            log.error("node queue consumer is gone; withdrawing from routing and re-subscribing")
            await self.withdraw()
        try:
            await self._bus.stop_consuming()
            await self._bus.consume_node(self.node_id, self.handle)
        except Exception as exc:
            log.warning("re-subscribing failed: %s", exc)
        if not self._bus.consuming():
            now = time.monotonic()
            self._lost_since = self._lost_since or now
            if now - self._lost_since >= RECOVERY_BUDGET_S:
                runtime.fail(f"node queue consumer not restored within {RECOVERY_BUDGET_S:.0f} s")
            return
        self._lost_since = None
        try:
            await self._directory.refresh_node(self.node_id, self.connections.presences(), self._heartbeat_s * 3)
        except Unavailable:
            return  # routable stays False: the next heartbeat tries again
        self.routable = True
        log.warning("node queue consumer restored; catching up what was routed elsewhere meanwhile")
        self.catch_up_all()

    def catch_up_all(self) -> None:
        """Read every connection's channels from the store after what it was sent: whatever
        was dispatched while this node could not be routed to arrives now, in order."""
        now = time.time()
        for conn in self.connections:
            for channel, sequence in list(conn.sequences.items()):
                if sequence.started and not sequence.fetching:
                    self._apply(conn, channel, sequence.start(sequence.sent, now), {})

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._tick_holes()
            await self.flush_receipts()

    async def flush_receipts(self) -> None:
        await self._receipts.flush(self._bus)
