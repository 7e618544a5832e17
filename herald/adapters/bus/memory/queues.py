"""The in-process bus's queues: a message with what a broker keeps about it, a FIFO that takes
a message back at its head, and the events groups' and dead letters' records."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field

from herald.messaging.events import topic_matches

# Events one group's queue keeps before dropping the oldest; the same bound as AmqpBus.
EVENTS_QUEUE_MAX = 100_000


@dataclass(slots=True)
class Item:
    """One message in a queue, with what a broker would keep about it."""

    body: bytes
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    failures: int = 0


class Mailbox:
    """A FIFO that can take a message back at its head, as a broker requeue does."""

    def __init__(self, maxsize: int = 0) -> None:
        self._items: deque[Item] = deque()
        self._maxsize = maxsize
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: Item) -> None:
        while self._maxsize and len(self._items) >= self._maxsize:
            await self._writable.wait()
        self._items.append(item)
        self._changed()

    def put_dropping_head(self, item: Item) -> bool:
        """Append without waiting; when full, drop the oldest first. True if one was dropped."""
        dropped = bool(self._maxsize) and len(self._items) >= self._maxsize
        if dropped:
            self._items.popleft()
        self._items.append(item)
        self._changed()
        return dropped

    def put_front(self, item: Item) -> None:
        """Return a message taken with ``get``; its room was never given away, so no wait."""
        self._items.appendleft(item)
        self._changed()

    async def get(self) -> Item:
        while not self._items:
            await self._readable.wait()
        item = self._items.popleft()
        self._changed()
        return item

    async def readable(self) -> None:
        """Return once the mailbox holds something (another consumer may take it first)."""
        await self._readable.wait()

    def take(self, most: int) -> list[Item]:
        """Up to ``most`` messages from the head, without waiting."""
        taken = [self._items.popleft() for _ in range(min(most, len(self._items)))]
        if taken:
            self._changed()
        return taken

    def _changed(self) -> None:
        if self._items:
            self._readable.set()
        else:
            self._readable.clear()
        if self._maxsize and len(self._items) >= self._maxsize:
            self._writable.clear()
        else:
            self._writable.set()


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue as its consumers see it: the mailbox, and the rules for failures."""

    label: str
    mailbox: Mailbox
    work: bool = False

    def __len__(self) -> int:
        return len(self.mailbox)

    @property
    def _items(self) -> list[bytes]:
        """The bodies waiting, in order: what tests that look inside the in-process bus read."""
        return [item.body for item in self.mailbox._items]


@dataclass(slots=True)
class EventGroup:
    """One group's queue and the patterns bound to it."""

    mailbox: Mailbox = field(default_factory=lambda: Mailbox(EVENTS_QUEUE_MAX))
    patterns: set[str] = field(default_factory=set)

    def wants(self, routing_key: str) -> bool:
        return any(topic_matches(pattern, routing_key) for pattern in self.patterns)


@dataclass(frozen=True, slots=True)
class Parked:
    queue: str
    item: Item
    at_ms: int
