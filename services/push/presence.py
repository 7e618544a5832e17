"""The push node's presence writes: connects and disconnects gathered into few directory calls.

Each connect must be in the directory (the user's route, the count of the app's broadcast
readers) before the node reads where the connection's channels start; each disconnect
must leave it. One round trip per connection is what made a storm of connects or
disconnects cost a Redis pipeline each and exhaust the connection pool. Here requests
wait for one event-loop turn, then go together: one ``add_connections``, one
``remove_connections``, one ``set_channel_counts`` for all of them, at most
``MAX_BATCH`` requests at a time. One writer runs at a time, so the requests that arrive
while a batch is out go together in the next one, and a connection's removal is never
written before its addition. The gathering is herald/core/batching.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from herald.adapters.directory.base import ChannelKey, Directory, Presence
from herald.core.batching import Batcher
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
        self._batcher: Batcher[_Request, tuple[bool, bool, bool]] = Batcher(
            self._write, name="presence-writer", max_batch=MAX_BATCH
        )

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
        # Shielded: a connection closing while its write is out must not cancel the batch.
        return await asyncio.shield(self._batcher.put(request))

    async def _write(self, batch: list[_Request]) -> list[tuple[bool, bool, bool]]:
        """Each request's (first or last connection, its presence written, counts written)."""
        firsts, lasts, added, removed, counted = await self._write_batch(batch)
        return [
            (r.presence.conn_id in firsts, added, counted)
            if r.adding
            else (r.presence.conn_id in lasts, removed, counted)
            for r in batch
        ]

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
