"""The push node's routes in the directory: registration, connects and disconnects, the
heartbeat, and the repairs that keep dispatch sending this node what its readers need.

The directory is allowed to forget (a flushed or restarted Redis, a reaper that took a
stalled node for dead): each heartbeat costs a few round trips whatever the number of
connections, tells when the node's record was lost or came up short, and only then
re-asserts every connection. Messages dispatched while this node was not routed to are
caught up from the store (``catch_up``). Disconnects the directory missed are retried at
each heartbeat, up to ``MAX_OWED_REMOVALS``; past that the record is rebuilt.

The bus keeps the node's subscription by itself (it subscribes again after a broker-side
cancel or a lost connection) and says when it was lost and when it is back: while lost,
the node leaves routing, so dispatch stops sending it what it could not read; once back,
it re-asserts its routes and catches up from the store what was routed elsewhere
meanwhile. A subscription lost for ``RECOVERY_BUDGET_S`` ends the process, for its
supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from herald.adapters.bus.base import Bus, Handler
from herald.adapters.directory.base import Directory, NodeReport, Presence
from herald.core.errors import Unavailable
from herald.core.model import BROADCAST
from herald.messaging import events
from herald.ops import metrics, runtime
from herald.services.push.announcer import Announcer
from herald.services.push.presence import PresenceWriter
from herald.services.push.readers import ChannelKey, Reader, ReaderIndex

log = logging.getLogger("herald.push")

# How long a lost broker subscription may stay lost (a broker restart takes seconds)
# before the node exits non-zero for its supervisor to restart it.
RECOVERY_BUDGET_S = 60.0
# How long `herald status` keeps showing a node that stopped reporting (then it is forgotten).
REPORT_KEPT_S = 300.0
# Disconnects the directory could not be told of, kept to be retried at each heartbeat;
# past this many the node rebuilds its whole record instead (``_rebuild_record``).
MAX_OWED_REMOVALS = 10_000


class RouteKeeper:
    def __init__(
        self,
        node_id: str,
        directory: Directory,
        bus: Bus,
        readers: ReaderIndex,
        announcer: Announcer,
        heartbeat_s: float,
        catch_up: Callable[[], None],
    ) -> None:
        """``catch_up`` re-reads every reader's channels from the store (after a loss)."""
        self.node_id = node_id
        self.routable = False
        self._directory = directory
        self._bus = bus
        self._readers = readers
        self._announcer = announcer
        self._heartbeat_s = heartbeat_s
        self._ttl_s = heartbeat_s * 3
        self._catch_up = catch_up
        self._presence = PresenceWriter(directory, node_id, self._ttl_s, readers.channel_counts)
        self._loop: asyncio.Task[None] | None = None
        self._lost_since: float | None = None  # when the subscription was lost, while it is
        self._change: asyncio.Task[None] | None = None  # the reaction to the last loss or return
        # What the heartbeat needs to know the directory's record of this node is whole
        # without reading it (see _beat): connections being added right now, disconnects
        # begun so far, disconnects the directory missed, and whether an add was missed.
        self._adding = 0
        self._removals_begun = 0
        self._owed: list[Presence] = []
        self._reassert = False
        self._rebuild = False

    # Start and stop ------------------------------------------------------------------

    async def start(self, handler: Handler) -> None:
        await self._bus.consume_node(self.node_id, handler, on_change=self._subscription_changed)
        # A previous process under this id (a restart) left connections that died with it.
        self._announcer.announce(events.USER_OFFLINE, await self._directory.reset_node(self.node_id))
        await self._directory.refresh_node(self.node_id, [], self._ttl_s)
        self.routable = True
        with contextlib.suppress(Unavailable):
            await self._report()
        self._loop = asyncio.create_task(self._heartbeat_loop(), name="push-heartbeat")

    async def stop(self) -> None:
        for task in (self._loop, self._change):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.withdraw()
        await self._bus.stop_consuming()

    async def withdraw(self, *, leaving: bool = False) -> None:
        """Stop being routed to: dispatch forgets this node at once (drain, dead consumer).

        A node ``leaving`` (drain) announces offline the users it held their last
        connection of; a node that only lost its subscription keeps its connections and
        re-asserts them when it is back, so nobody went offline.
        """
        self.routable = False
        presences = self._readers.presences()
        with contextlib.suppress(Unavailable):
            if leaving and presences:
                gone = await self._directory.remove_connections(self.node_id, presences)
                self._announcer.announce(events.USER_OFFLINE, gone)
            zeros = dict.fromkeys(self._readers.channel_counts(), 0)
            if zeros:
                await self._directory.set_channel_counts(self.node_id, zeros, self._ttl_s)
            await self._directory.remove_node(self.node_id, presences)

    # Connects and disconnects --------------------------------------------------------

    async def add(self, reader: Reader) -> None:
        """Route the user here in the shared directory; announce them online if this is
        their first connection anywhere. ``reader.routed`` says whether it was written."""
        self._adding += 1
        try:
            added = await self._presence.add(reader.presence, [(reader.app_id, BROADCAST)])
        finally:
            self._adding -= 1
        if not added.presence_written:
            # The next heartbeat re-asserts every local connection; until then live
            # messages for this user may miss this node and are recovered on resume.
            log.warning("directory unavailable at connect", extra={"conn_id": reader.conn_id})
            self._reassert = True
        if not (added.presence_written and added.counts_written):
            reader.routed = False
        if added.first:
            self._announcer.announce(events.USER_ONLINE, [reader.presence])

    async def remove(self, reader: Reader, changed: list[ChannelKey]) -> None:
        """The connection is gone (already out of the index): tell the directory, and
        announce the user offline if it was their last connection anywhere."""
        self._removals_begun += 1
        last = await self._presence.remove(reader.presence, changed)
        if last is None:
            # Presence does not expire on its own: the heartbeat tells the directory later.
            log.warning("directory unavailable at disconnect", extra={"conn_id": reader.conn_id})
            self._owe_removals([reader.presence])
        elif last:
            self._announcer.announce(events.USER_OFFLINE, [reader.presence])

    async def write_counts(self, keys: list[ChannelKey]) -> bool:
        """Tell the directory how many local readers these channels have now; False if it
        could not be told (the heartbeat writes every count again)."""
        counts = self._readers.channel_counts(keys)
        if not counts:
            return True
        try:
            await self._directory.set_channel_counts(self.node_id, counts, self._ttl_s)
        except Unavailable:
            log.warning("directory unavailable while updating channel routes; the heartbeat retries")
            return False
        return True

    # The heartbeat -------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if self._lost_since is not None and time.monotonic() - self._lost_since >= RECOVERY_BUDGET_S:
                runtime.fail(f"node queue consumer not restored within {RECOVERY_BUDGET_S:.0f} s")
            if not self.routable:
                continue
            try:
                await self.beat()
            except Unavailable as exc:
                log.warning("heartbeat failed: %s", exc.message)

    async def beat(self) -> None:
        """One heartbeat: a few round trips whatever the number of connections.

        The node's key is refreshed and the directory's count of the node's connections
        compared with the ones it must have: every local connection whose add finished,
        less disconnects begun meanwhile. Only when the key was lost, an add failed, or
        the count falls short (a flush, a reaper that took this node for dead while it
        stalled) are all connections re-asserted, O(connections), and only when the key
        was lost are the messages of the gap caught up from the store.
        """
        if self._rebuild:
            await self._rebuild_record()
        expected = len(self._readers) - self._adding
        begun = self._removals_begun
        beat = await self._directory.beat(self.node_id, self._ttl_s)
        expected -= self._removals_begun - begun
        if not beat.known or self._reassert or beat.connections < expected:
            if beat.known and not self._reassert:
                log.warning(
                    "the directory lost %d of this node's connections; re-asserting them",
                    expected - beat.connections,
                )
            self._reassert = False
            try:
                await self._directory.refresh_node(self.node_id, self._readers.presences(), self._ttl_s)
            except Unavailable:
                self._reassert = True
                raise
        await self._settle_removals()
        await self._directory.set_channel_counts(self.node_id, self._readers.channel_counts(), self._ttl_s)
        # Whoever notices a dead node first cleans up after it and announces its
        # users offline; the directory lets only one node do it.
        self._announcer.announce(events.USER_OFFLINE, await self._directory.reap_dead_nodes(), node_id=None)
        await self._report()
        if not beat.known:
            log.warning("this node's routes were lost (directory flushed or expired); catching up")
            self._catch_up()

    def _owe_removals(self, presences: list[Presence]) -> None:
        """Keep disconnects the directory missed for the heartbeat to retry; too many, and
        the node rebuilds its record from what it holds instead."""
        if self._rebuild:
            return
        self._owed += presences
        if len(self._owed) > MAX_OWED_REMOVALS:
            log.warning("over %d disconnects owed to the directory; rebuilding this node's record", MAX_OWED_REMOVALS)
            self._owed = []
            self._rebuild = True

    async def _settle_removals(self) -> None:
        owed, self._owed = self._owed, []
        if not owed:
            return
        try:
            last = await self._directory.remove_connections(self.node_id, owed)
        except Unavailable:
            self._owe_removals(owed)
            raise
        self._announcer.announce(events.USER_OFFLINE, last)

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
        still = [p for p in gone if not self._readers.of_user(p.app_id, p.user_id)]
        self._announcer.announce(events.USER_OFFLINE, still)
        try:
            await self._directory.refresh_node(self.node_id, self._readers.presences(), self._ttl_s)
        except Unavailable:
            self._reassert = True
            raise
        finally:
            self._catch_up()

    async def _report(self) -> None:
        """Tell operators (``herald status``, ``/metrics``) how this node is doing."""
        label = f"node:{self.node_id}"
        try:
            # Its own queue only: every passive declare of a missing queue (a legacy one, the
            # dead letters before the first) costs AMQP a channel, and aiormq a few KB kept.
            depth: int | None = (await self._bus.queue_depths([self.node_id], shared=False)).get(label)
        except Unavailable:
            depth = None
        if depth is not None:
            metrics.queue_depth.labels(label).set(depth)
        report = NodeReport(self.node_id, len(self._readers), self._readers.by_app(), depth, int(time.time() * 1000))
        await self._directory.report_node(report, REPORT_KEPT_S)

    def _subscription_changed(self, consuming: bool) -> None:
        """The bus lost this node's subscription, or has it back (``Bus.consume_node``)."""
        previous = self._change
        self._change = asyncio.get_running_loop().create_task(self._follow(consuming, previous))

    async def _follow(self, consuming: bool, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:  # a loss and a return are handled in the order they came
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await previous
        if not consuming:
            self._lost_since = self._lost_since or time.monotonic()
            log.error("node queue consumer is gone; leaving routing until the bus has it back")
            await self.withdraw()
            return
        self._lost_since = None
        try:
            await self._directory.refresh_node(self.node_id, self._readers.presences(), self._ttl_s)
            await self._directory.set_channel_counts(self.node_id, self._readers.channel_counts(), self._ttl_s)
        except Unavailable:
            log.warning("node queue consumer restored, directory unavailable: the heartbeat re-asserts the routes")
            self._reassert = True
        self.routable = True
        log.warning("node queue consumer restored; catching up what was routed elsewhere meanwhile")
        self._catch_up()
