"""The push node's store reads: backlogs and gaps, shared, bounded, and fenced for groups.

One read per (channel, position) at a time for the whole node: the readers of a shared
channel meet the same gap together, and ten thousand of them must not make ten thousand
reads; at most ``MAX_CONCURRENT_READS`` are in flight, so a catch-up of every
connection does not flood the store.

A group's page is applied only behind a **barrier**: a marker the node sends to its own
queue and waits to consume. The queue is FIFO, so by then every command queued to the
node before the page was read — a leave in particular — has been applied, and the page
of a channel left meanwhile is dropped by the core: a page can never hand a former
member what was sent after they left, whatever the order of the store's and the bus's
answers (found by tests/unit/test_delivery_properties.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from herald.adapters.bus.base import Bus
from herald.adapters.store.base import Store
from herald.core import commands
from herald.core.commands import Barrier
from herald.core.errors import Unavailable
from herald.services.push.sequencing import PAGE

log = logging.getLogger("herald.push")

MAX_CONCURRENT_READS = 16
RETRY_S = 1.0
# How long a barrier marker may take to come back through the node's queue before another
# is sent (the first was lost: the queue was re-created, the broker restarted).
BARRIER_TIMEOUT_S = 10.0

Page = list[dict[str, Any]]


class StoreReads:
    def __init__(self, store: Store, bus: Bus, node_id: str) -> None:
        self._store = store
        self._bus = bus
        self._node_id = node_id
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_READS)
        self._reads: dict[tuple[str, str, int], asyncio.Future[Page]] = {}  # popped when done
        # Barriers: waiters for the next marker, markers sent and not back yet (popped when
        # a marker at or after them comes back), the last mark used.
        self._waiting: list[asyncio.Future[None]] = []
        self._sent: dict[int, list[asyncio.Future[None]]] = {}
        self._sending = False
        self._mark = 0
        self._tasks: set[asyncio.Task[None]] = set()  # each removed when done

    async def page(self, app_id: str, channel: str, after: int) -> Page:
        """The channel's messages after ``after`` (at most ``PAGE``), ready to apply;
        retried while the store is down."""
        while True:
            try:
                page = await self._shared(app_id, channel, after)
                break
            except Unavailable:
                await asyncio.sleep(RETRY_S)
        if channel.startswith("group:"):
            await self.barrier()
        return page

    async def _shared(self, app_id: str, channel: str, after: int) -> Page:
        key = (app_id, channel, after)
        read = self._reads.get(key)
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(self._read(app_id, channel, after))
            read.add_done_callback(lambda _done: self._reads.pop(key, None))
        return await asyncio.shield(read)  # the page is read-only for its readers

    async def _read(self, app_id: str, channel: str, after: int) -> Page:
        async with self._slots:
            page = await self._store.read_channel(app_id, channel, after, PAGE, time.time())
        return [message.to_wire() for message in page]

    async def barrier(self) -> None:
        """Until the node has consumed everything queued to it before the call. One marker
        serves every waiter of a loop turn; a lost one is sent again after a timeout."""
        loop = asyncio.get_running_loop()
        while True:
            future = loop.create_future()
            self._waiting.append(future)
            if not self._sending:
                self._sending = True
                task = loop.create_task(self._send_markers(), name="barrier")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            try:
                await asyncio.wait_for(asyncio.shield(future), BARRIER_TIMEOUT_S)
                return
            except TimeoutError:
                log.warning("a barrier marker did not come back through this node's queue; sending another")

    async def _send_markers(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                self._mark += 1
                self._sent[self._mark] = waiting
                body = commands.encode([Barrier(self._mark)])
                while True:
                    try:
                        await self._bus.publish_to_nodes({self._node_id: body})
                        break
                    except Unavailable:
                        await asyncio.sleep(RETRY_S)
        finally:
            self._sending = False

    def marker_back(self, mark: int) -> None:
        """The node consumed marker ``mark``: every barrier waiting on it or before is passed."""
        for sent in [m for m in self._sent if m <= mark]:
            for future in self._sent.pop(sent):
                if not future.done():
                    future.set_result(None)

    def sizes(self) -> dict[str, int]:
        return {"reads": len(self._reads), "barriers": len(self._sent) + len(self._waiting)}
