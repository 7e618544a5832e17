"""Group commit: concurrent requests share their store writes and their publish.

Each accept costs a few round trips whatever its size (an offset allocation per channel,
one insert, one confirmed publish), and on the store server a round trip costs more than
the documents it carries. So concurrent requests are accepted together
(``Acceptor.accept_together``): one allocation per distinct channel, one ``insert_many``,
one publish for the whole group. When nothing is being written a request goes at once,
with whatever arrived in the same event-loop turn; while a group is being written the
next one gathers for ``window_s`` (about a millisecond), and while ``max_in_flight``
groups are, it stays open and keeps growing.

Each request still hears back only when its messages are stored (and published, or left
to the outbox), and a group is all or nothing: when the store refuses it, every request
in it gets the error and none of their messages is queued. A request whose caller gave
up before its group was written is left out of it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from herald.core.model import Message
from herald.messaging.accept import Acceptor, Draft

# About a millisecond: while another group is being written, the time a new group
# gathers before it may take a free slot. (Nothing is being written: no wait at all.)
WINDOW_S = 0.001
# Messages per group: bounds one insert_many and the bodies of one publish. A group
# fails as a whole when one store write times out (3 s by default), so it stays far
# from that: 2,000 documents take the MongoDB-wire stand-in about 0.3 s to insert, and
# two 1,000-message batches still share a group.
MAX_MESSAGES = 2_000
# Groups written at once: their round trips overlap while the next group gathers.
MAX_IN_FLIGHT = 2


@dataclass(slots=True)
class _Request:
    app_id: str
    drafts: Sequence[Draft]
    answer: asyncio.Future[list[list[Message]]]


@dataclass(slots=True)
class _Group:
    requests: list[_Request] = field(default_factory=list)
    messages: int = 0


class GroupCommit:
    def __init__(
        self,
        acceptor: Acceptor,
        window_s: float = WINDOW_S,
        max_messages: int = MAX_MESSAGES,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._acceptor = acceptor
        self._window_s = window_s
        self._max_messages = max_messages
        self._slots = asyncio.Semaphore(max_in_flight)
        self._open: _Group | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing = 0  # groups being written now
        self.groups = 0

    async def accept(self, app_id: str, drafts: Sequence[Draft]) -> list[list[Message]]:
        """What ``Acceptor.accept`` returns, written together with concurrent requests."""
        size = sum(len(draft.channels) for draft in drafts)
        group = self._open
        if group is None or (group.requests and group.messages + size > self._max_messages):
            group = self._open = _Group()
            task = asyncio.create_task(self._commit(group), name="group-commit")
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._ended, group))
        answer: asyncio.Future[list[list[Message]]] = asyncio.get_running_loop().create_future()
        group.requests.append(_Request(app_id, drafts, answer))
        group.messages += size
        return await answer

    async def _commit(self, group: _Group) -> None:
        # Idle, a request is written at once (with whatever arrived in the same event-loop
        # turn): a lone request pays no window. Busy, the group gathers for the window.
        await asyncio.sleep(self._window_s if self._writing else 0)
        async with self._slots:
            # Closed only now: while earlier groups hold every slot, this one keeps growing.
            self._close(group)
            requests = [request for request in group.requests if not request.answer.done()]
            if not requests:
                return
            self.groups += 1
            self._writing += 1
            try:
                results = await self._acceptor.accept_together([(r.app_id, r.drafts) for r in requests])
            except Exception as exc:
                for request in requests:
                    if not request.answer.done():
                        request.answer.set_exception(exc)
                return
            finally:
                self._writing -= 1
            for request, result in zip(requests, results, strict=True):
                if not request.answer.done():
                    request.answer.set_result(result)

    def _ended(self, group: _Group, task: asyncio.Task[None]) -> None:
        """However the group's task ended (cancelled at shutdown, even before it ran), no
        request of the group is left waiting for an answer."""
        self._tasks.discard(task)
        self._close(group)
        for request in group.requests:
            request.answer.cancel()  # no effect on those already answered

    def _close(self, group: _Group) -> None:
        if self._open is group:
            self._open = None
