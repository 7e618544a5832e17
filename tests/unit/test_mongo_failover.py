"""The MongoDB store across a primary step-down, with the driver's errors injected: what is
retried, until when, and that a refused write of messages leaves none behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    WTimeoutError,
)

from herald.adapters.store.mongo import MongoStore
from herald.adapters.store.mongo import retry as mongo_retry
from herald.core.errors import Unavailable
from herald.core.model import Message

NOT_WRITABLE_PRIMARY = OperationFailure("not primary", code=10107)


def _labelled(label: str) -> ConnectionFailure:
    error = ConnectionFailure("connection reset")
    error._add_error_label(label)
    return error


@pytest.mark.parametrize(
    "error",
    [
        NotPrimaryError("not primary", {}),
        AutoReconnect("connection closed"),
        NetworkTimeout("timed out"),
        NOT_WRITABLE_PRIMARY,
        OperationFailure("interrupted", code=11602),  # InterruptedDueToReplStateChange
        OperationFailure("stepped down", code=189),  # PrimarySteppedDown
        OperationFailure("shutting down", code=91),
        _labelled("RetryableWriteError"),
    ],
    ids=lambda error: error.__class__.__name__ + str(getattr(error, "code", "") or ""),
)
def test_the_errors_of_a_primary_changing_hands_are_retried(error: Exception) -> None:
    assert mongo_retry.retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        WTimeoutError("majority not reached in time", code=64),  # perhaps applied: not repeated blindly
        DuplicateKeyError("E11000", code=11000),
        OperationFailure("bad query", code=2),
        ValueError("a bug"),
    ],
    ids=lambda error: error.__class__.__name__,
)
def test_answers_and_uncertain_writes_are_not_retried(error: Exception) -> None:
    assert not mongo_retry.retryable(error)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_step_down_is_ridden_out_with_a_growing_backoff() -> None:
    clock, calls = Clock(), []

    async def write() -> str:
        calls.append(clock.now)
        if len(calls) <= 3:
            raise NotPrimaryError("not primary", {})
        return "written"

    result = await mongo_retry.with_retries("writing", write, 3.0, clock=clock, sleep=clock.sleep)

    assert result == "written"
    assert clock.slept == [0.05, 0.1, 0.2]


async def test_past_the_deadline_it_is_unavailable() -> None:
    clock, calls = Clock(), []

    async def write() -> None:
        calls.append(clock.now)
        raise AutoReconnect("no primary yet")

    with pytest.raises(Unavailable) as raised:
        await mongo_retry.with_retries("writing", write, 1.0, clock=clock, sleep=clock.sleep)

    assert raised.value.status == 503 and raised.value.code == "store_unavailable"
    assert clock.now <= 1.0 and len(calls) >= 4


async def test_a_non_retryable_error_surfaces_at_once() -> None:
    calls = 0

    async def write() -> None:
        nonlocal calls
        calls += 1
        raise OperationFailure("bad update", code=9)

    with pytest.raises(OperationFailure):
        await mongo_retry.with_retries("writing", write, 3.0)
    assert calls == 1


# The store itself, its collections replaced by in-memory ones that fail on cue ----------


class Cursor:
    def __init__(self, docs: Iterable[dict[str, Any]]) -> None:
        self._docs = list(docs)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async def each() -> AsyncIterator[dict[str, Any]]:
            for doc in self._docs:
                yield doc

        return each()


class Collection:
    """Just enough of a collection; ``failures`` are raised by the next calls, in turn.
    ``apply_then_fail`` makes an insert write its first N documents before failing, as a
    primary that stepped down mid-batch would."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.failures: list[Exception] = []
        self.apply_then_fail: int | None = None
        self.calls: list[str] = []

    def _fail(self, call: str) -> None:
        self.calls.append(call)
        if self.failures:
            raise self.failures.pop(0)

    async def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        if self.apply_then_fail is not None and self.failures:
            for doc in docs[: self.apply_then_fail]:
                self.docs[doc["_id"]] = doc
            self.apply_then_fail = None  # once: the attempts after it write nothing before failing
        self._fail("insert_many")
        for doc in docs:
            if doc["_id"] in self.docs:
                raise AssertionError(f"{doc['_id']} written twice")
            self.docs[doc["_id"]] = doc

    def find(self, query: dict[str, Any], projection: Any = None) -> Cursor:
        self.calls.append("find")
        wanted = query["_id"]["$in"]
        return Cursor(self.docs[i] for i in wanted if i in self.docs)

    async def delete_many(self, query: dict[str, Any]) -> None:
        self._fail("delete_many")
        for i in query["_id"]["$in"]:
            self.docs.pop(i, None)

    async def find_one_and_update(self, **args: Any) -> dict[str, Any]:
        self._fail("find_one_and_update")
        doc = self.docs.setdefault(args["filter"]["_id"], {"_id": args["filter"]["_id"], "n": 0})
        doc["n"] += args["update"]["$inc"]["n"]
        return dict(doc)

    async def bulk_write(self, updates: list[Any], ordered: bool = False) -> None:
        self._fail("bulk_write")


def _store(timeout_s: float = 1.0) -> tuple[MongoStore, Collection, Collection, Collection]:
    # The client connects lazily: with every collection replaced, nothing is dialled.
    store = MongoStore("mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=50", "unit", timeout_s)
    messages, counters, cursors = Collection(), Collection(), Collection()
    store._messages, store._counters, store._cursors = messages, counters, cursors  # type: ignore[assignment]
    return store, messages, counters, cursors


def _messages(count: int) -> list[Message]:
    return [
        Message(f"m{n}", "app_1", "user:u", n, "e", {"n": n}, 1_000, 2_000_000_000.0, "accepted", None, "pending")
        for n in range(1, count + 1)
    ]


async def test_messages_written_before_a_step_down_are_not_written_twice() -> None:
    store, messages, _, _ = _store()
    messages.failures = [AutoReconnect("primary stepped down")]
    messages.apply_then_fail = 2  # two of three were written before the connection dropped

    await store.insert_messages(_messages(3))

    assert sorted(messages.docs) == ["m1", "m2", "m3"]
    assert messages.calls == ["insert_many", "find", "insert_many"]
    await store.close()


async def test_messages_refused_after_the_deadline_leave_nothing_behind() -> None:
    store, messages, _, _ = _store(timeout_s=0.3)
    messages.failures = [NOT_WRITABLE_PRIMARY] * 4  # past 0.3 s of backoff; then a primary answers
    messages.apply_then_fail = 1  # the first attempt wrote one before failing

    with pytest.raises(Unavailable):
        await store.insert_messages(_messages(2))

    assert messages.calls[-1] == "delete_many"
    assert messages.docs == {}, "a 503 must not leave a message for the outbox to deliver"
    await store.close()


async def test_an_offset_allocation_rides_out_a_step_down() -> None:
    store, _, counters, _ = _store()
    counters.failures = [NotPrimaryError("not primary", {}), NOT_WRITABLE_PRIMARY]

    offsets = await store.allocate_offsets("app_1", {"user:u": 1})

    assert offsets == {"user:u": 1}
    await store.close()


async def test_positions_are_saved_across_a_dropped_connection() -> None:
    store, _, _, cursors = _store()
    cursors.failures = [AutoReconnect("connection reset")]

    await store.save_cursors("app_1", "u", {"user:u": 4})

    assert cursors.calls == ["bulk_write", "bulk_write"]
    await store.close()


async def test_a_store_without_a_primary_for_longer_than_its_timeout_is_unavailable() -> None:
    store, _, _, cursors = _store(timeout_s=0.3)
    cursors.failures = [_labelled("RetryableWriteError")] * 100

    started = asyncio.get_running_loop().time()
    with pytest.raises(Unavailable):
        await store.save_cursors("app_1", "u", {"user:u": 4})

    assert asyncio.get_running_loop().time() - started < 1.0
    await store.close()
