"""The reads of a connection's start, shared by every connection starting together.

A handshake needs its user's live connection count (the per-user cap, from the
directory); a connection starting needs its user's cursors and groups and the head of
each of its channels (its groups' heads once it is routed in them: ``PushNode.load``).
Asked one connection at a time, that is a Redis and three store round trips per
handshake, each paying its driver's whole request machinery; during a connect storm (a
node restarted, a deploy) it was most of the node's CPU. Here the connections of one
event-loop turn share one call per app of each kind, and while those are out the next
turn's connections gather for the next batch (``Batcher``): the cost is per batch, not
per handshake, and a quiet node adds no wait.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.batching import Batcher
from herald.core.errors import Unavailable
from herald.core.model import BROADCAST

# Users (or channel lists) per query: bounds one query's size, and a batch's wait.
MAX_BATCH = 256
# Queries of each kind out at once; the connections arriving meanwhile wait and go together.
# One: with four out, a storm's batches stayed small (each query came back before many
# handshakes had gathered) and the store did twice the work per handshake (same-run
# pairs at 4,000 connections, docs/BENCHMARKS.md: stand-in 2.3-2.6 -> 1.0-1.3 ms each).
MAX_IN_FLIGHT = 1

Positions = dict[str, int]
UserKey = tuple[str, str]  # (app_id, user_id)
HeadsKey = tuple[str, tuple[str, ...]]  # (app_id, channels)


class ConnectReads:
    def __init__(self, store: Store, directory: Directory) -> None:
        self._store = store
        self._directory = directory
        self._held: Batcher[UserKey, int] = Batcher(
            self._read_held, name="connect-held", max_batch=MAX_BATCH, max_in_flight=MAX_IN_FLIGHT
        )
        self._states: Batcher[UserKey, tuple[Positions, Positions]] = Batcher(
            self._read_states, name="connect-states", max_batch=MAX_BATCH, max_in_flight=MAX_IN_FLIGHT
        )
        self._heads: Batcher[HeadsKey, Positions] = Batcher(
            self._read_heads, name="connect-heads", max_batch=MAX_BATCH, max_in_flight=MAX_IN_FLIGHT
        )
        self._closed = False

    async def held(self, app_id: str, user_id: str) -> int:
        """How many connections the user holds on live nodes (the directory's count).
        Raises Unavailable if the directory is down."""
        self._check_open()
        return await self._held.submit((app_id, user_id))

    async def start(self, app_id: str, user_id: str, inbox: str) -> tuple[Positions, Positions, Positions]:
        """The user's cursors (channel -> acknowledged offset), groups (group channel -> the
        offset joined after) and the heads of their inbox and of the broadcast, read at once:
        one wait instead of two for a connection without groups. Raises Unavailable if the
        store is down."""
        self._check_open()
        (cursors, groups), heads = await asyncio.gather(
            self._states.put((app_id, user_id)), self._heads.put((app_id, (inbox, BROADCAST)))
        )
        return dict(cursors), dict(groups), heads

    async def heads(self, app_id: str, channels: Sequence[str]) -> Positions:
        """Each channel's last allocated offset."""
        self._check_open()
        return await self._heads.submit((app_id, tuple(channels)))

    async def _read_held(self, batch: list[UserKey]) -> list[int]:
        by_app = _users_by_app(batch)
        counts = await asyncio.gather(
            *(self._directory.online(app_id, users, len(users)) for app_id, users in by_app.items())
        )
        found = dict(zip(by_app, counts, strict=True))
        return [found[app_id].get(user_id, 0) for app_id, user_id in batch]

    async def _read_states(self, batch: list[UserKey]) -> list[tuple[Positions, Positions]]:
        by_app = _users_by_app(batch)
        reads = [
            asyncio.gather(self._store.cursors_of(app_id, users), self._store.memberships(app_id, users))
            for app_id, users in by_app.items()
        ]
        found = dict(zip(by_app, await asyncio.gather(*reads), strict=True))
        empty: Positions = {}
        return [
            (found[app_id][0].get(user_id, empty), found[app_id][1].get(user_id, empty)) for app_id, user_id in batch
        ]

    async def _read_heads(self, batch: list[HeadsKey]) -> list[Positions]:
        by_app: dict[str, set[str]] = defaultdict(set)
        for app_id, channels in batch:
            by_app[app_id].update(channels)
        heads = await asyncio.gather(*(self._store.channel_heads(app_id, list(chs)) for app_id, chs in by_app.items()))
        found = dict(zip(by_app, heads, strict=True))
        return [{channel: found[app_id][channel] for channel in channels} for app_id, channels in batch]

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("this node is stopping; reconnect to another")

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(self._held.close(), self._states.close(), self._heads.close())


def _users_by_app(batch: list[UserKey]) -> dict[str, list[str]]:
    """Each app's distinct users in the batch."""
    by_app: dict[str, dict[str, None]] = defaultdict(dict)
    for app_id, user_id in batch:
        by_app[app_id][user_id] = None
    return {app_id: list(users) for app_id, users in by_app.items()}
