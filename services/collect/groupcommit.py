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
up before its group was written is left out of it. The gathering, the window and the
slots are herald/core/batching.py's; this module says what a group is and how it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from herald.core.batching import Batcher
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
# Groups written at once: their round trips overlap while the next group gathers. The app
# passes its store's ``concurrent_writes`` (one for SQLite's single writer).
MAX_IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class _Request:
    app_id: str
    drafts: Sequence[Draft]
    messages: int  # how many it stores: the group's size is counted in these


class GroupCommit:
    def __init__(
        self,
        acceptor: Acceptor,
        window_s: float = WINDOW_S,
        max_messages: int = MAX_MESSAGES,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._acceptor = acceptor
        self._batcher: Batcher[_Request, list[list[Message]]] = Batcher(
            self._write,
            name="group-commit",
            busy_linger_s=window_s,
            max_batch=max_messages,
            max_in_flight=max_in_flight,
            size=lambda request: request.messages,
        )

    @property
    def groups(self) -> int:
        """Groups written so far."""
        return self._batcher.batches

    async def accept(self, app_id: str, drafts: Sequence[Draft]) -> list[list[Message]]:
        """What ``Acceptor.accept`` returns, written together with concurrent requests."""
        messages = len(drafts[0].channels) if len(drafts) == 1 else sum(len(d.channels) for d in drafts)
        return await self._batcher.submit(_Request(app_id, drafts, messages))

    async def _write(self, requests: list[_Request]) -> list[list[list[Message]]]:
        return await self._acceptor.accept_together([(r.app_id, r.drafts) for r in requests])
