"""A push node: the delivery core's decisions carried out on sockets, the store and the bus.

Every event (a bus body, a connect, a client's frame, a store page, the clock) goes into
``DeliveryCore`` (``services.push.delivery``), which decides; the decisions of a loop
turn are taken out together and carried out here, so a connection gets one write per
turn however many messages it was sent, and a node that falls behind pays fewer system
calls per message the busier it is. Routes in the directory are ``RouteKeeper``'s,
presence events the ``Announcer``'s, acks and deliveries the ``ReceiptBuffer``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core import commands
from herald.core.commands import Barrier, Join, Kick, Leave
from herald.core.errors import Unavailable
from herald.ops import metrics
from herald.services.push.announcer import Announcer
from herald.services.push.connect_reads import ConnectReads
from herald.services.push.delivery import DeliveryCore
from herald.services.push.outlet import Outlet, context
from herald.services.push.readers import Reader
from herald.services.push.reads import StoreReads
from herald.services.push.receipt_buffer import ReceiptBuffer
from herald.services.push.routes import RouteKeeper

log = logging.getLogger("herald.push")

# Acks are flushed, and gaps and token deadlines checked, at least this often.
TICK_S = 1.0
# Delivery records leave this often, acks only with the tick. A second's worth of
# deliveries at 1,000 messages/s is a burst of 1,000 records to encode, decode and insert
# at once, and the messages behind it wait: with a fifth of a second, the p99 at 1,000
# msg/s went from 26-35 ms to 17-24 in `herald dev` and from 274-289 ms to 104-118 in the
# cluster, whose store stand-in serves one command at a time (docs/BENCHMARKS.md). Acks
# stay a second's worth: merged per connection until then, and each is a store write.
DELIVERIES_EVERY_S = 0.2
# How long a clean close may wait for its acks to be written before it is answered.
PERSIST_TIMEOUT_S = 3.0


class PushNode:
    def __init__(self, node_id: str, bus: Bus, directory: Directory, store: Store, heartbeat_s: float) -> None:
        self.node_id = node_id
        self.core = DeliveryCore()
        self.readers = self.core.readers
        self._bus = bus
        self._store = store
        self._receipts = ReceiptBuffer()
        self._announcer = Announcer(bus, node_id)
        self.routes = RouteKeeper(node_id, directory, bus, self.readers, self._announcer, heartbeat_s, self.catch_up)
        self._reads = StoreReads(store, bus, node_id)
        self.connect_reads = ConnectReads(store, directory)
        self._outlet = Outlet(self.core, self._receipts, self.routes, self._reads, self._spawn, self.soon)
        self._tasks: set[asyncio.Task[None]] = set()  # each removed when done
        self._tick: asyncio.Task[None] | None = None
        self._flush_soon = False
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = float("inf")

    # Events in -----------------------------------------------------------------------

    async def handle(self, body: bytes) -> None:
        """The bus handler for this node's queue: message batches and control commands."""
        try:
            messages, received = commands.split_node_body(body)
        except ValueError as exc:
            log.error("dropping an unreadable node body (%d bytes): %s", len(body), exc)
            return
        now = time.time()
        core = self.core
        for command in received:
            if isinstance(command, Join):
                core.join(command.app_id, command.user_id, command.channel, command.after, now)
            elif isinstance(command, Leave):
                core.leave(command.app_id, command.user_id, command.channel)
            elif isinstance(command, Kick):
                core.kick(command.app_id, command.user_id, command.token_hash, command.reason, now)
            elif isinstance(command, Barrier):
                self._reads.marker_back(command.mark)
        if messages:
            metrics.push_bus_messages.inc(len(messages))
            core.messages(messages, now)
        self.soon()

    async def attach(self, reader: Reader, checked_at: float) -> bool:
        """A connection whose token was checked at ``checked_at`` (epoch seconds) joins: into
        the core, then the directory. False if the core refused it (it closes it). Nothing
        is written to it until ``begin``: messages arriving meanwhile wait in its sequences."""
        if not self.core.add(reader, checked_at, time.time()):
            self.soon()
            return False
        metrics.push_connections.set(len(self.readers))
        log.debug("connected", extra=context(reader))
        await self.routes.add(reader)
        return True

    async def load(self, reader: Reader) -> tuple[dict[str, int], dict[str, int]]:
        """Subscribe the connection to its groups and say where each channel starts.

        After ``attach``: a join the directory did not route here yet was written to the
        store before this read, so it is in its memberships; a later one reaches this node as a
        command. Every channel's head is read after its routes were written: a message
        allocated later arrives live, so a channel starting at its head needs no store read.
        The inbox's and the broadcast's routes are written by ``attach``, so their heads are
        read beside the cursors and memberships; a group's only once its count is written,
        in a second read for members alone. The reads are shared with the connections
        starting in the same loop turn (``ConnectReads``). Returns the start positions and
        the heads (for ``begin``); raises Unavailable if the store is down.
        """
        cursors, groups, heads = await self.connect_reads.start(reader.app_id, reader.user_id, reader.user_channel)
        for channel, offset in self._receipts.pending_positions(reader.app_id, reader.user_id).items():
            cursors[channel] = max(offset, cursors.get(channel, 0))
        joined = self.core.load_groups(reader, groups)
        if joined and not await self.routes.write_counts(joined):
            reader.routed = False
        if reader.groups:
            heads.update(await self.connect_reads.heads(reader.app_id, list(reader.groups)))
        return self.core.positions(reader, cursors, heads), heads

    def begin(self, reader: Reader, positions: dict[str, int], heads: dict[str, int]) -> None:
        """Start every channel of the connection (after its welcome and any ``resume``)."""
        self.core.start(reader, positions, heads, time.time())
        self.soon()

    async def detach(self, reader: Reader) -> None:
        """The connection is gone: out of the core, then out of the directory."""
        changed = self.core.remove(reader)
        reader.sink = None  # no cycle left between the socket and its reader
        if not changed:
            return
        metrics.push_connections.set(len(self.readers))
        log.debug("disconnected", extra=context(reader))
        await self.routes.remove(reader, changed)

    async def persist_acks(self, reader: Reader) -> None:
        """The client closed cleanly: write what it acknowledged before the close is answered,
        so those acks hold for its next connection on any node."""
        positions = self.core.closing(reader)
        if not positions:
            return
        try:
            saving = self._store.save_cursors(reader.app_id, reader.user_id, positions)
            await asyncio.wait_for(saving, PERSIST_TIMEOUT_S)
        except (Unavailable, TimeoutError):
            log.warning("could not persist acks at a clean close; they follow with receipts", extra=context(reader))

    def catch_up(self) -> None:
        self.core.catch_up(time.time())
        self.soon()

    # Decisions out -------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Messages written to sockets since start, all connections counted."""
        return self._outlet.delivered

    def soon(self) -> None:
        """Carry out the core's decisions at the end of this loop turn."""
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        decisions = self.core.take()
        self._outlet.carry_out(decisions)
        if decisions.wake_at is not None and decisions.wake_at < self._wake_at:
            self._arm(decisions.wake_at)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # The clock -----------------------------------------------------------------------

    def _arm(self, at: float) -> None:
        """A tick at ``at`` (epoch seconds), sooner than the regular one."""
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = at
        self._wake = asyncio.get_running_loop().call_later(max(0.0, at - time.time()), self._woken)

    def _woken(self) -> None:
        self._wake, self._wake_at = None, float("inf")
        self.core.tick(time.time())
        self.soon()

    async def _tick_loop(self) -> None:
        per_tick = max(1, round(TICK_S / DELIVERIES_EVERY_S))
        turns = 0
        while True:
            await asyncio.sleep(TICK_S / per_tick)
            turns += 1
            if turns % per_tick:
                await self._receipts.flush(self._bus, acks=False)
                continue
            self.core.trace = log.isEnabledFor(logging.DEBUG)
            self.core.tick(time.time())
            self.soon()
            await self.flush_receipts()

    async def flush_receipts(self) -> None:
        await self._receipts.flush(self._bus)

    # Start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        self.core.trace = log.isEnabledFor(logging.DEBUG)
        await self.routes.start(self.handle)
        self._tick = asyncio.create_task(self._tick_loop(), name="push-tick")

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self._wake is not None:
            self._wake.cancel()
        for task in [*([self._tick] if self._tick else []), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.cancel()
                await task
        await self.flush_receipts()
        await self.connect_reads.close()
        await self.routes.stop()
        await self._announcer.stop()
