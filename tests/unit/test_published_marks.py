"""Published marks: bus confirms recorded in the store off the request path, many per write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from unittest.mock import patch

import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.store.sqlite import SqliteStore
from herald.core import codec
from herald.core.errors import Unavailable
from herald.core.model import Message, now_ms
from herald.messaging.accept import Acceptor, Draft
from herald.messaging.published import PublishedMarks
from herald.services.collect.outbox import OutboxSweeper

APP = "app_00000000000000a1"


class MarkingStore(SqliteStore):
    """The standalone store, recording each mark_published call; it can be made to refuse them."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.marks: list[list[str]] = []
        self.refuse_marks = False
        self.marked = asyncio.Event()

    async def mark_published(self, message_ids: Sequence[str]) -> None:
        if self.refuse_marks:
            raise Unavailable("store down", code="store_unavailable")
        self.marks.append(list(message_ids))
        await super().mark_published(message_ids)
        self.marked.set()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[MarkingStore]:
    impl = MarkingStore(str(tmp_path / "herald.db"))
    await impl.start()
    try:
        yield impl
    finally:
        await impl.close()


async def accept(acceptor: Acceptor, *users: str) -> list[Message]:
    bus_draft = Draft(tuple(f"user:{user}" for user in users), "e", None, 60)
    [messages] = await acceptor.accept(APP, [bus_draft])
    return messages


async def statuses(store: SqliteStore, messages: Sequence[Message]) -> list[str]:
    found = [await store.get_message(APP, m.id, time.time()) for m in messages]
    return [m.published for m in found if m is not None]


async def acceptor_with(store: SqliteStore, marks: PublishedMarks) -> Acceptor:
    bus = MemoryBus()
    await bus.start()
    return Acceptor(store, bus, marks)


async def test_an_accept_returns_before_its_mark_is_written(store: MarkingStore) -> None:
    acceptor = await acceptor_with(store, PublishedMarks(store))
    messages = await accept(acceptor, "ann")
    assert await statuses(store, messages) == ["pending"]
    assert store.marks == []


async def test_marks_of_many_accepts_are_written_together(store: MarkingStore) -> None:
    marks = PublishedMarks(store)
    acceptor = await acceptor_with(store, marks)
    first = await accept(acceptor, "ann")
    second = await accept(acceptor, "bob", "cid")
    await marks.flush()
    assert store.marks == [[m.id for m in first + second]]
    assert await statuses(store, first + second) == ["yes", "yes", "yes"]


async def test_the_background_loop_writes_marks_without_being_asked(store: MarkingStore) -> None:
    marks = PublishedMarks(store, linger_s=0.0)
    await marks.start()
    try:
        acceptor = await acceptor_with(store, marks)
        messages = await accept(acceptor, "ann")
        await asyncio.wait_for(store.marked.wait(), 30)  # a bound on the test, not a speed check
    finally:
        await marks.stop()
    assert await statuses(store, messages) == ["yes"]


async def test_stop_writes_the_marks_still_waiting(store: MarkingStore) -> None:
    marks = PublishedMarks(store, linger_s=3600)
    await marks.start()
    messages = await accept(await acceptor_with(store, marks), "ann")
    await marks.stop()
    assert await statuses(store, messages) == ["yes"]


async def test_one_write_carries_at_most_max_ids(store: MarkingStore) -> None:
    marks = PublishedMarks(store, max_ids_per_write=2)
    messages = await accept(await acceptor_with(store, marks), "a", "b", "c", "d", "e")
    await marks.flush()
    assert [len(ids) for ids in store.marks] == [2, 2, 1]
    assert await statuses(store, messages) == ["yes"] * 5


async def test_marks_the_store_refuses_leave_the_messages_to_the_outbox(store: MarkingStore) -> None:
    marks = PublishedMarks(store)
    messages = await accept(await acceptor_with(store, marks), "ann")
    store.refuse_marks = True
    await marks.flush()
    assert marks.pending == 0, "a refused mark is not retried: the sweeper publishes the message again"
    assert [m.id for m in await store.unpublished(now_ms() + 1, 10, time.time())] == [m.id for m in messages]


async def test_marks_past_the_bound_are_dropped_and_left_to_the_outbox(store: MarkingStore) -> None:
    marks = PublishedMarks(store, max_pending=2)
    messages = await accept(await acceptor_with(store, marks), "a", "b", "c")
    assert (marks.pending, marks.dropped) == (2, 1)
    await marks.flush()
    assert [m.id for m in await store.unpublished(now_ms() + 1, 10, time.time())] == [messages[2].id]


async def test_without_marks_an_accept_writes_its_own_mark(store: MarkingStore) -> None:
    bus = MemoryBus()
    await bus.start()
    messages = await accept(Acceptor(store, bus), "ann")
    assert await statuses(store, messages) == ["yes"]


async def test_the_outbox_sweeper_republishes_only_what_no_mark_recorded(store: MarkingStore) -> None:
    marks = PublishedMarks(store)
    acceptor = await acceptor_with(store, marks)
    recorded = await accept(acceptor, "ann", "bob")
    await marks.flush()
    store.refuse_marks = True
    [lost] = await accept(acceptor, "cid")
    await marks.flush()
    healthy = MemoryBus()
    await healthy.start()
    # Negative: "older than a second from now", so a message stamped this very millisecond counts.
    with patch("herald.services.collect.outbox.MIN_AGE_S", -1.0):
        assert await OutboxSweeper(store, Acceptor(store, healthy)).sweep() == 1
    [wire] = [wire for body in list(healthy._dispatch._items) for wire in codec.decode_batch(body)]
    assert wire["id"] == lost.id and lost.id not in {m.id for m in recorded}
