"""The push node's presence writes: connects and disconnects gathered into few directory calls.

Each connect must be in the directory (the user's route, the count of the app's broadcast
readers) before the node reads where the connection's channels start; each disconnect
must leave it. One round trip per connection is what made a storm of connects or
disconnects cost a Redis pipeline each and exhaust the connection pool. Here requests
wait for one event-loop turn, then go together: one ``add_connections``, one
``remove_connections``, one ``set_channel_counts`` for all of them, at most
``MAX_BATCH`` requests at a time. One writer runs at a time, so the requests that arrive
while a batch is out go together in the next one, and a connection's removal is never
written before its addition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from herald.adapters.directory.base import ChannelKey, Directory, Presence
from herald.core.errors import Unavailable

MAX_BATCH = 512


class Added(NamedTuple):
    first: bool  # the user's first connection anywhere: announce them online
    presence_written: bool  # False: the directory missed it; the heartbeat writes it
    counts_written: bool  # the channel counts asked for were written too


@dataclass(slots=True)
class _Request:
    adding: bool
    presence: Presence
    channels: list[ChannelKey]
    done: asyncio.Future[tuple[bool, bool, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PresenceWriter:
    def __init__(
        self,
        directory: Directory,
        node_id: str,
        ttl_s: float,
        counts: Callable[[list[ChannelKey]], dict[ChannelKey, int]],
    ) -> None:
        """``counts`` gives the node's current reader counts of channels, read when written."""
        self._directory = directory
        self._node_id = node_id
        self._ttl_s = ttl_s
        self._counts = counts
        self._pending: list[_Request] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, presence: Presence, channels: list[ChannelKey]) -> Added:
        """Write a new connection and the reader counts of ``channels``; never raises for the
        directory being down (the answer says what was not written)."""
        first, written, counts = await self._request(_Request(True, presence, channels))
        return Added(first, written, counts)

    async def remove(self, presence: Presence, channels: list[ChannelKey]) -> bool | None:
        """Forget a connection and write the reader counts of ``channels``: whether it was its
        user's last (announce them offline), None if the directory missed the removal."""
        last, written, _ = await self._request(_Request(False, presence, channels))
        return last if written else None

    async def _request(self, request: _Request) -> tuple[bool, bool, bool]:
        self._pending.append(request)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all(), name="presence-writer")
        # Shielded: a connection closing while its write is out must not cancel the batch.
        return await asyncio.shield(request.done)

    async def _write_all(self) -> None:
        try:
            await asyncio.sleep(0)  # the other connects and disconnects of this loop turn
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._write(batch)
        finally:
            self._writer = None
            if self._pending:  # cancelled (node stopping): nobody is left to write them
                for request in self._pending:
                    request.done.cancel()
                self._pending = []

    async def _write(self, batch: list[_Request]) -> None:
        try:
            firsts, lasts, added, removed, counted = await self._write_batch(batch)
        except Exception as exc:  # a bug: it surfaces in every connection of the batch
            for request in batch:
                request.done.set_exception(exc)
            return
        except asyncio.CancelledError:  # the node is stopping
            for request in batch:
                request.done.cancel()
            raise
        for request in batch:
            conn_id = request.presence.conn_id
            if request.adding:
                request.done.set_result((conn_id in firsts, added, counted))
            else:
                request.done.set_result((conn_id in lasts, removed, counted))

    async def _write_batch(self, batch: list[_Request]) -> tuple[set[str], set[str], bool, bool, bool]:
        """(first connections, last connections, adds written, removals written, counts written)."""
        adds = [request.presence for request in batch if request.adding]
        removes = [request.presence for request in batch if not request.adding]
        firsts: set[str] = set()
        lasts: set[str] = set()
        added = removed = counted = True
        if adds:
            try:
                firsts = {p.conn_id for p in await self._directory.add_connections(self._node_id, adds, self._ttl_s)}
            except Unavailable:
                added = False
        if removes:
            try:
                lasts = {p.conn_id for p in await self._directory.remove_connections(self._node_id, removes)}
            except Unavailable:
                removed = False
        channels = list(dict.fromkeys(key for request in batch for key in request.channels))
        if channels:
            try:
                await self._directory.set_channel_counts(self._node_id, self._counts(channels), self._ttl_s)
            except Unavailable:
                counted = False
        return firsts, lasts, added, removed, counted
