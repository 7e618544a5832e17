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

from herald.services.push.connections import ChannelKey, Connection, LocalConnections, write_framed
from herald.services.push.framing import text_frame
from herald.services.push.presence import PresenceWriter
from herald.services.push.protocol import CLOSE_REVOKED, CLOSE_SLOW_CONSUMER, message_frame
from herald.services.push.receipt_buffer import ReceiptBuffer
from herald.services.push.sequencing import HOLE_GRACE_S, PAGE, Step, contiguous_runs

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory, NodeReport, Presence
from herald.adapters.store.base import Store
from herald.core import commands
from herald.core.commands import Command, Join, Kick, Leave
from herald.core.errors import Unavailable
from herald.core.model import BROADCAST, Delivery, parse_channel
from herald.messaging import events
from herald.ops import metrics, runtime

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
# How long `herald status` keeps showing a node that stopped reporting (then it is forgotten).
REPORT_KEPT_S = 300.0
# Disconnects the directory could not be told of, kept to be retried at each heartbeat;
# past this many the node rebuilds its whole record instead (``_rebuild``).
MAX_OWED_REMOVALS = 10_000
# Presence events published by one task at most (their confirms awaited together).
MAX_EVENTS_PER_TASK = 256


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
        # Whether per-message DEBUG lines are wanted, asked once a tick rather than once a
        # socket: the question costs more than the rest of a delivery's bookkeeping.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._hole_tick: asyncio.TimerHandle | None = None
        self._reads: dict[tuple[str, str, int], asyncio.Future[list[dict[str, Any]]]] = {}
        self._unflushed: dict[Connection, list[bytes]] = {}  # frames written at the end of this loop turn
        self.delivered = 0
        # What the heartbeat needs to know the directory's record of this node is whole
        # without reading it (see _beat): connections being added right now, disconnects
        # begun so far, disconnects the directory missed, and whether an add was missed.
        self._adding = 0
        self._removals_begun = 0
        self._owed_removals: list[Presence] = []
        self._reassert = False
        self._rebuild = False
        self._presence = PresenceWriter(directory, node_id, heartbeat_s * 3, self.connections.channel_counts)
        self._events: list[dict[str, Any]] = []  # presence events published at the end of this loop turn

    # Bus side ---------------------------------------------------------------
    async def handle(self, body: bytes) -> None:
        """The bus handler for this node's queue: message batches and control commands."""
        try:
            messages, received = commands.split_node_body(body)
        except ValueError as exc:
            log.error("dropping an unreadable node body (%d bytes): %s", len(body), exc)
            return
        for command in received:
            await self.command(command)
        if messages:
            metrics.push_bus_messages.inc(len(messages))
            self.deliver(messages)

    def deliver(self, messages: Iterable[dict[str, Any]]) -> None:
        """Write live messages to their local readers. A run of consecutive offsets on one
        channel is framed once and written to each caught-up reader in one write; a reader
        that is not caught up (resuming, or missing an offset) goes through its sequence."""
        now = time.time()
        frames: dict[str, bytes] = {}
        for run in contiguous_runs(messages):
            first = run[0]
            channel = first["channel"]
            kind, name = parse_channel(channel)
            if kind == "user":
                readers = self.connections.of_user(first["app"], name)
            else:
                readers = self.connections.readers(first["app"], channel)
            if not readers:
                continue
            framed = b""
            written = 0
            for conn in list(readers):
                sequence = conn.sequences.get(channel)
                if not conn.closing and sequence is not None and sequence.take_run(first["offset"], run[-1]["offset"]):
                    if not framed:
                        framed = b"".join(self._frame(message, frames) for message in run)
                    self._write(conn, channel, run, framed)
                    written += len(run)
                else:
                    for message in run:
                        written += self._apply(conn, channel, conn.sequence(channel).live(message, now), frames)
            self._count(written)
            done = time.time()
            for message in run:
                metrics.delivery_latency.observe(max(0.0, done - message["ts"] / 1000))

    @staticmethod
    def _frame(message: dict[str, Any], frames: dict[str, bytes]) -> bytes:
        """The message's frame, built once per delivery for all its readers."""
        frame = frames.get(message["id"])
        if frame is None:
            frame = frames[message["id"]] = text_frame(message_frame(message).encode())
        return frame

    def _write(self, conn: Connection, channel: str, messages: list[dict[str, Any]], framed: bytes) -> None:
        """Write framed messages to one connection and record what was delivered."""
        # Per-device delivery records for inboxes only: a group message to ten
        # thousand members would otherwise write ten thousand records.
        if channel.startswith("user:"):  # a connection reads only its own user's inbox
            now = time.time()
            for message in messages:
                self._receipts.delivered(
                    Delivery(message["id"], conn.app_id, channel, message["offset"], conn.conn_id, conn.device, now)
                )
        if self._debug:
            for message in messages:
                log.debug(
                    "wrote %s %d", channel, message["offset"], extra={**_context(conn), "message_id": message["id"]}
                )
        chunks = self._unflushed.get(conn)
        if chunks is not None:
            chunks.append(framed)
            return
        self._unflushed[conn] = [framed]
        if len(self._unflushed) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write what this turn of the event loop delivered: one write per connection, however
        many messages it got. A node that falls behind takes several queued bodies in one
        turn, so the busier it is, the fewer system calls each message costs; when it keeps
        up, this runs right after the one delivery, with no added wait."""
        unflushed, self._unflushed = self._unflushed, {}
        for conn, chunks in unflushed.items():
            write_framed(conn.ws, chunks[0] if len(chunks) == 1 else b"".join(chunks))
            self._bound_output(conn)

    def _count(self, written: int) -> None:
        """Counted per message or batch, not per socket: a counter increment takes a lock."""
        if written:
            self.delivered += written
            metrics.messages_delivered.inc(written)

    # Control ------------------------------------------------------------------
    async def command(self, command: Command) -> None:
        conns = [c for c in self.connections.of_user(command.app_id, command.user_id) if not c.closing]
        if isinstance(command, Kick):
            for conn in conns:
                if command.token_hash is None or command.token_hash == conn.token_hash:
                    self._close_soon(conn, CLOSE_REVOKED, command.reason or "kicked")
        elif isinstance(command, Join):
            await self.join(conns, command.channel, command.after)
        elif isinstance(command, Leave):
            await self.leave(conns, command.channel)

    async def join(self, conns: list[Connection], channel: str, after: int) -> None:
        """Live connections start reading a group at once, from where the member joined.

        The channel's route is written before its backlog is read: a message dispatched
        before the route existed is in the store by then, and one dispatched after it
        arrives live, so none falls between the two.
        """
        joining = [conn for conn in conns if channel not in conn.groups]
        if not joining:
            return
        for conn in joining:
            self.connections.subscribe(conn, channel)
        await self._write_counts([(joining[0].app_id, channel)])
        for conn in joining:
            if conn.started:
                self.begin(conn, {channel: after})
            else:
                conn.pending_starts[channel] = after

    async def leave(self, conns: list[Connection], channel: str) -> None:
        leaving = [conn for conn in conns if channel in conn.groups]
        if not leaving:
            return
        for conn in leaving:
            self.connections.unsubscribe(conn, channel)
            self._holes.discard((conn, channel))
        await self._write_counts([(leaving[0].app_id, channel)])

    async def _write_counts(self, keys: list[ChannelKey] | None = None) -> bool:
        """Tell the directory how many local readers these channels (or all) have now;
        False if it could not be told (the heartbeat writes every count again)."""
        counts = self.connections.channel_counts(keys)
        if not counts:
            return True
        try:
            await self._directory.set_channel_counts(self.node_id, counts, self._heartbeat_s * 3)
        except Unavailable:
            log.warning("directory unavailable while updating channel routes; the heartbeat retries")
            return False
        return True

    def _announce(self, kind: str, presences: list[Presence], *, node_id: str | None = "") -> None:
        """Publish presence events in the background: a slow broker must not slow connects.

        ``node_id`` is where the connections were: this node unless said otherwise (a
        reaped dead node's users carry None: the directory no longer knows which it was).
        """
        for presence in presences:
            value = events.event(
                kind,
                presence.app_id,
                user_id=presence.user_id,
                conn_id=presence.conn_id,
                node_id=self.node_id if node_id == "" else node_id,
            )
            self._events.append(value)
            if len(self._events) == 1:
                asyncio.get_running_loop().call_soon(self._publish_events)

    def _publish_events(self) -> None:
        """The events of one loop turn go out together, their confirms awaited together: a
        connect storm costs one task per ``MAX_EVENTS_PER_TASK`` events, not one per event.
        Each stays its own message with its own routing key (``herald.events``)."""
        pending, self._events = self._events, []
        for start in range(0, len(pending), MAX_EVENTS_PER_TASK):
            chunk = pending[start : start + MAX_EVENTS_PER_TASK]
            self._spawn(self._publish_chunk(chunk), "events")

    async def _publish_chunk(self, values: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(events.publish(self._bus, value) for value in values))

    def _apply(self, conn: Connection, channel: str, step: Step, frames: dict[str, bytes]) -> int:
        """Carry out a sequencing decision: write, read the store, or close an overflowing client."""
        if conn.closing:
            return 0
        if step.overflow:
            self._close_soon(conn, CLOSE_SLOW_CONSUMER, "slow consumer: resume later")
            return 0
        if step.write:
            self._write(conn, channel, step.write, b"".join(self._frame(message, frames) for message in step.write))
        if step.fetch_after is not None:
            self._spawn(self._fetch(conn, channel, step.fetch_after), f"fetch-{conn.conn_id}")
        if conn.sequence(channel).hole_since is not None and (conn, channel) not in self._holes:
            self._holes.add((conn, channel))
            self._tick_holes_soon()
        return len(step.write)

    def _tick_holes_soon(self) -> None:
        """A tick at the end of a new hole's grace, sooner than the regular one."""
        if self._hole_tick is None:
            self._hole_tick = asyncio.get_running_loop().call_later(HOLE_GRACE_S, self._tick_holes)

    async def _fetch(self, conn: Connection, channel: str, after: int) -> None:
        """Read the store for what the connection misses; retried while the store is down."""
        while conn.ws.open:
            try:
                wires = await self._read_shared(conn.app_id, channel, after)
            except Unavailable:
                await asyncio.sleep(STORE_RETRY_S)
                continue
            self._count(self._apply(conn, channel, conn.sequence(channel).fetched(wires, time.time()), {}))
            return

    async def _read_shared(self, app_id: str, channel: str, after: int) -> list[dict[str, Any]]:
        """One store read per (channel, position) at a time for the whole node: the readers of
        a shared channel meet the same hole together, and ten thousand of them must not make
        ten thousand reads. The page is read-only for its readers."""
        key = (app_id, channel, after)
        read = self._reads.get(key)
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(self._read_page(app_id, channel, after))
            read.add_done_callback(lambda _done: self._reads.pop(key, None))
        return await asyncio.shield(read)

    async def _read_page(self, app_id: str, channel: str, after: int) -> list[dict[str, Any]]:
        async with self._fetch_slots:
            page = await self._store.read_channel(app_id, channel, after, PAGE, time.time())
        return [message.to_wire() for message in page]

    def begin(self, conn: Connection, positions: dict[str, int], heads: dict[str, int] | None = None) -> None:
        """Start (or restart) the connection's channels after the given positions; a channel
        whose head is given and not past its position has no backlog to read."""
        now = time.time()
        heads = heads or {}
        for channel, position in positions.items():
            step = conn.sequence(channel).start(position, now, heads.get(channel))
            self._count(self._apply(conn, channel, step, {}))

    def _bound_output(self, conn: Connection) -> None:
        transport = conn.ws.transport
        if transport is not None and transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            log.warning("closing a slow consumer", extra=_context(conn))
            self._close_soon(conn, CLOSE_SLOW_CONSUMER, "slow consumer: resume later")

    def _close_soon(self, conn: Connection, code: int, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        log.info("closing with %d: %s", code, reason, extra=_context(conn))
        if conn.ws.open:
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
        if self._hole_tick is not None:
            self._hole_tick.cancel()
            self._hole_tick = None
        now = time.time()
        in_grace = False
        for conn, channel in list(self._holes):
            sequence = conn.sequences.get(channel)
            if sequence is None or sequence.hole_since is None or not conn.ws.open:
                self._holes.discard((conn, channel))
                continue
            in_grace = in_grace or now - sequence.hole_since < HOLE_GRACE_S
            self._count(self._apply(conn, channel, sequence.tick(now), {}))
        if in_grace:
            self._tick_holes_soon()

    # Connection side --------------------------------------------------------
    async def attach(self, conn: Connection) -> None:
        """Route the user here, locally and in the shared directory; announce them online if
        this is their first connection anywhere. Nothing is written to the connection until
        ``begin_all``: messages arriving meanwhile are held by their sequences."""
        self.connections.add(conn)
        metrics.push_connections.set(len(self.connections))
        log.debug("connected", extra=_context(conn))
        self._adding += 1
        try:
            added = await self._presence.add(conn.presence, [(conn.app_id, BROADCAST)])
        finally:
            self._adding -= 1
        if not added.presence_written:
            # The next heartbeat re-asserts every local connection; until then live
            # messages for this user may miss this node and are recovered on resume.
            log.warning("directory unavailable at connect", extra={"conn_id": conn.conn_id})
            self._reassert = True
        if not (added.presence_written and added.counts_written):
            conn.routed = False
        if added.first:
            self._announce(events.USER_ONLINE, [conn.presence])

    async def load_channels(self, conn: Connection) -> dict[str, int]:
        """Subscribe the connection to its groups and say where each channel starts.

        Called after ``attach``: a join that the directory did not yet route here was
        written to the store before this read, so it is in ``groups_of``; one that came
        later reaches this node as a command. Raises Unavailable if the store is down.
        """
        user_channel = conn.user_channel
        cursors, groups = await asyncio.gather(
            self._store.get_cursors(conn.app_id, conn.user_id),
            self._store.groups_of(conn.app_id, conn.user_id),
        )
        for channel, offset in self._receipts.pending_positions(conn.app_id, conn.user_id).items():
            cursors[channel] = max(offset, cursors.get(channel, 0))
        joined = [f"group:{group}" for group in groups if f"group:{group}" not in conn.groups]
        for channel in joined:
            self.connections.subscribe(conn, channel)
        if joined and not await self._write_counts([(conn.app_id, channel) for channel in joined]):
            conn.routed = False
        # Every channel's head in one read, after every route was written: a message
        # allocated later reaches this node live, so a channel whose start position is its
        # head has nothing to read from the store (begin_all).
        group_channels = [f"group:{group}" for group in groups]
        heads = await self._store.channel_heads(conn.app_id, [user_channel, BROADCAST, *group_channels])
        # A reader with no acknowledged position starts at the present of shared channels
        # (the broadcast's head, the group's offset when they joined), not their history.
        positions = {user_channel: cursors.get(user_channel, 0), BROADCAST: cursors.get(BROADCAST, heads[BROADCAST])}
        for group, after in groups.items():
            channel = f"group:{group}"
            positions[channel] = max(after, cursors.get(channel, 0))
        if conn.routed:
            conn.heads = heads
        return positions

    def begin_all(self, conn: Connection, positions: dict[str, int]) -> None:
        """Start every channel of the connection: from ``positions``, or where a join that
        arrived meanwhile said."""
        starts = {**conn.pending_starts, **positions}
        # A join that arrived meanwhile may still have been writing its route when the heads
        # were read: its channel reads the store.
        heads = {channel: head for channel, head in (conn.heads or {}).items() if channel not in conn.pending_starts}
        conn.heads = None
        conn.pending_starts.clear()
        conn.started = True
        self.begin(conn, {channel: offset for channel, offset in starts.items() if conn.may_read(channel)}, heads)

    async def detach(self, conn: Connection) -> None:
        for channel in conn.sequences:
            self._holes.discard((conn, channel))
        changed = self.connections.remove(conn)
        if not changed:
            return
        metrics.push_connections.set(len(self.connections))
        log.debug("disconnected", extra=_context(conn))
        self._removals_begun += 1
        last = await self._presence.remove(conn.presence, changed)
        if last is None:
            # Presence does not expire on its own: the heartbeat tells the directory later.
            log.warning("directory unavailable at disconnect", extra={"conn_id": conn.conn_id})
            self._owe_removals([conn.presence])
        elif last:
            self._announce(events.USER_OFFLINE, [conn.presence])

    def record_ack(self, conn: Connection, channel: str, offset: int) -> None:
        metrics.messages_acked.inc()
        self._receipts.acked(conn.app_id, conn.user_id, conn.conn_id, channel, offset)

    # Node-wide loops --------------------------------------------------------
    async def start(self) -> None:
        await self._bus.consume_node(self.node_id, self.handle)
        # A previous process under this id (a restart) left connections that died with it.
        self._announce(events.USER_OFFLINE, await self._directory.reset_node(self.node_id))
        await self._directory.refresh_node(self.node_id, [], self._heartbeat_s * 3)
        self.routable = True
        with contextlib.suppress(Unavailable):
            await self._report()
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

    async def withdraw(self, *, leaving: bool = False) -> None:
        """Stop being routed to: dispatch forgets this node at once (drain, dead consumer).

        A node ``leaving`` (drain) announces offline the users it held their last
        connection of; a node that only lost its subscription keeps its connections and
        re-asserts them when it is back, so nobody went offline.
        """
        self.routable = False
        presences = self.connections.presences()
        with contextlib.suppress(Unavailable):
            if leaving and presences:
                self._announce(events.USER_OFFLINE, await self._directory.remove_connections(self.node_id, presences))
            zeros = dict.fromkeys(self.connections.channel_counts(), 0)
            if zeros:
                await self._directory.set_channel_counts(self.node_id, zeros, self._heartbeat_s * 3)
            await self._directory.remove_node(self.node_id, presences)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if not self._bus.consuming():
                await self._recover_subscription()
            if not self.routable:
                continue
            try:
                await self._beat()
            except Unavailable as exc:
                log.warning("heartbeat failed: %s", exc.message)

    async def _beat(self) -> None:
        """One heartbeat: a few round trips whatever the number of connections.

        The node's key is refreshed and the directory's count of the node's connections
        compared with the ones it must have: every local connection whose add finished,
        less disconnects begun meanwhile. Only when the key was lost, an add failed, or
        the count falls short (a flush, a reaper that took this node for dead while it
        stalled) are all connections re-asserted, O(connections), and only when the key
        was lost are the messages of the gap caught up from the store.
        """
        ttl_s = self._heartbeat_s * 3
        if self._rebuild:
            await self._rebuild_record()
        expected = len(self.connections) - self._adding
        begun = self._removals_begun
        beat = await self._directory.beat(self.node_id, ttl_s)
        expected -= self._removals_begun - begun
        if not beat.known or self._reassert or beat.connections < expected:
            if beat.known and not self._reassert:
                log.warning(
                    "the directory lost %d of this node's connections; re-asserting them",
                    expected - beat.connections,
                )
            self._reassert = False
            try:
                await self._directory.refresh_node(self.node_id, self.connections.presences(), ttl_s)
            except Unavailable:
                self._reassert = True
                raise
        await self._settle_removals()
        await self._directory.set_channel_counts(self.node_id, self.connections.channel_counts(), ttl_s)
        # Whoever notices a dead node first cleans up after it and announces its
        # users offline; the directory lets only one node do it.
        self._announce(events.USER_OFFLINE, await self._directory.reap_dead_nodes(), node_id=None)
        await self._report()
        if not beat.known:
            log.warning("this node's routes were lost (directory flushed or expired); catching up")
            self.catch_up_all()

    def _owe_removals(self, presences: list[Presence]) -> None:
        """Keep disconnects the directory missed for the heartbeat to retry; too many, and
        the node rebuilds its record from what it holds instead."""
        if self._rebuild:
            return
        self._owed_removals += presences
        if len(self._owed_removals) > MAX_OWED_REMOVALS:
            log.warning("over %d disconnects owed to the directory; rebuilding this node's record", MAX_OWED_REMOVALS)
            self._owed_removals = []
            self._rebuild = True

    async def _settle_removals(self) -> None:
        owed, self._owed_removals = self._owed_removals, []
        if not owed:
            return
        try:
            last = await self._directory.remove_connections(self.node_id, owed)
        except Unavailable:
            self._owe_removals(owed)
            raise
        self._announce(events.USER_OFFLINE, last)

    async def _rebuild_record(self) -> None:
        """Forget every connection recorded under this node, then write the ones it holds:
        the cure for disconnects the directory missed beyond ``MAX_OWED_REMOVALS``. Users
        whose only connections were those are announced offline; messages routed while the
        record was being rewritten are caught up from the store."""
        self._rebuild = False
        try:
            gone = await self._directory.reset_node(self.node_id)
        except Unavailable:
            self._rebuild = True
            raise
        # Users still connected here are written back below: they never went offline.
        self._announce(events.USER_OFFLINE, [p for p in gone if not self.connections.of_user(p.app_id, p.user_id)])
        try:
            await self._directory.refresh_node(self.node_id, self.connections.presences(), self._heartbeat_s * 3)
        except Unavailable:
            self._reassert = True
            raise
        finally:
            self.catch_up_all()

    async def _report(self) -> None:
        """Tell operators (``herald status``, ``/metrics``) how this node is doing."""
        label = f"node:{self.node_id}"
        try:
            depth: int | None = (await self._bus.queue_depths([self.node_id])).get(label)
        except Unavailable:
            depth = None
        if depth is not None:
            metrics.queue_depth.labels(label).set(depth)
        by_app = self.connections.by_app()
        report = NodeReport(self.node_id, len(self.connections), by_app, depth, int(time.time() * 1000))
        await self._directory.report_node(report, REPORT_KEPT_S)

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
            await self._directory.set_channel_counts(
                self.node_id, self.connections.channel_counts(), self._heartbeat_s * 3
            )
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
                    self._count(self._apply(conn, channel, sequence.start(sequence.sent, now), {}))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._debug = log.isEnabledFor(logging.DEBUG)
            self._tick_holes()
            await self.flush_receipts()

    async def flush_receipts(self) -> None:
        await self._receipts.flush(self._bus)


def _context(conn: Connection) -> dict[str, str]:
    """The log fields that say which connection a line is about."""
    return {"app_id": conn.app_id, "user_id": conn.user_id, "conn_id": conn.conn_id}
