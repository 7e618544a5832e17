"""Presence events (``user.online``, ``user.offline``) published in the background.

A slow broker must not slow connects, and a connect storm must not cost a task per
event: the events of one loop turn go out together, at most ``MAX_EVENTS_PER_TASK``
per task with their confirms awaited together. Each stays its own message with its own
routing key (``herald.messaging.events``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Presence
from herald.messaging import events

MAX_EVENTS_PER_TASK = 256


class Announcer:
    def __init__(self, bus: Bus, node_id: str) -> None:
        self._bus = bus
        self._node_id = node_id
        self._pending: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # each removed when done

    def announce(self, kind: str, presences: Sequence[Presence], *, node_id: str | None = "") -> None:
        """Queue one event per connection. ``node_id`` is where the connections were: this
        node unless said otherwise (a reaped dead node's users carry None: the directory no
        longer knows which it was)."""
        for presence in presences:
            value = events.event(
                kind,
                presence.app_id,
                user_id=presence.user_id,
                conn_id=presence.conn_id,
                node_id=self._node_id if node_id == "" else node_id,
            )
            self._pending.append(value)
            if len(self._pending) == 1:
                asyncio.get_running_loop().call_soon(self._publish_pending)

    def _publish_pending(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_EVENTS_PER_TASK):
            task = asyncio.get_running_loop().create_task(self._publish(pending[start : start + MAX_EVENTS_PER_TASK]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self, values: list[dict[str, Any]]) -> None:
        await events.publish_all(self._bus, values)

    async def stop(self) -> None:
        """Let the events already queued go out (bounded), then drop the rest."""
        if self._pending:
            self._publish_pending()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5.0)
