"""Whether a message's recipients were online: the ``online`` flag of every 202.

The requests of one group commit hear back in the same event-loop turn and all ask the
directory next; their lookups are merged into one ``nodes_for`` round trip instead of
one per request (a Redis round trip was about 6% of a single-message request).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

from herald.adapters.directory.base import Directory
from herald.core.errors import Unavailable
from herald.core.model import parse_channel

Recipient = tuple[str, str]


class OnlineLookups:
    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._waiting: list[tuple[Sequence[Recipient], asyncio.Future[dict[Recipient, set[str]]]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0

    async def online(self, app_id: str, channels: Sequence[str]) -> dict[str, bool | None]:
        """Per recipient channel: connected right now? None when the directory cannot say,
        and always None for groups and broadcast."""
        online: dict[str, bool | None] = dict.fromkeys(channels)
        users = {channel: parse_channel(channel) for channel in online}
        recipients = [(app_id, name) for kind, name in users.values() if kind == "user"]
        if not recipients:
            return online
        try:
            nodes = await self._nodes_for(recipients)
        except Unavailable:
            return online
        for channel, (kind, name) in users.items():
            if kind == "user":
                online[channel] = (app_id, name) in nodes
        return online

    async def _nodes_for(self, recipients: Sequence[Recipient]) -> dict[Recipient, set[str]]:
        loop = asyncio.get_running_loop()
        if self._waiting is None:
            self._waiting = []
            # After the callbacks already queued: the other requests of the group join first.
            loop.call_soon(self._send)
        answer: asyncio.Future[dict[Recipient, set[str]]] = loop.create_future()
        self._waiting.append((recipients, answer))
        return await answer

    def _send(self) -> None:
        waiting, self._waiting = self._waiting or [], None
        task = asyncio.create_task(self._lookup(waiting), name="online-lookup")
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._ended, waiting))

    def _ended(self, waiting: list[tuple[Sequence[Recipient], asyncio.Future[Any]]], task: asyncio.Task[None]) -> None:
        """However the lookup ended (cancelled at shutdown, even before it ran), nobody is
        left waiting for it."""
        self._tasks.discard(task)
        for _, answer in waiting:
            answer.cancel()  # no effect on those already answered

    async def _lookup(
        self, waiting: list[tuple[Sequence[Recipient], asyncio.Future[dict[Recipient, set[str]]]]]
    ) -> None:
        everyone = list(dict.fromkeys(recipient for recipients, _ in waiting for recipient in recipients))
        self.round_trips += 1
        try:
            nodes = await self._directory.nodes_for(everyone)
        except Exception as exc:
            for _, answer in waiting:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for _, answer in waiting:
            if not answer.done():
                answer.set_result(nodes)
