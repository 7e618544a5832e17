"""Messages in MongoDB: stored all or none within the store's deadline, read by channel, and
moved forward through their statuses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, ExecutionTimeout, OperationFailure

from herald.adapters.store.base import MessageStore
from herald.adapters.store.mongo.connection import (
    MongoConnection,
    duplicates_only,
    to_datetime,
    to_epoch,
    translated,
)
from herald.adapters.store.mongo.retry import log, with_retries
from herald.adapters.store.records import message_from, message_record
from herald.core.errors import Conflict, Unavailable
from herald.core.model import STATUSES, Message, status_rank

# How long taking back a failed insert of messages may wait (after the deadline passed).
UNDO_TIMEOUT_S = 2.0


class MongoMessages(MongoConnection, MessageStore):
    async def insert_messages(self, messages: Sequence[Message]) -> None:
        """Store messages, all or none, within the store's deadline.

        After a failed attempt (a step-down, a dropped connection) the next one inserts
        only the messages that no earlier attempt wrote, so nothing is stored twice and a
        message whose insert was in fact applied is not refused as a duplicate of itself.
        When the deadline passes, whatever the attempts wrote is deleted before the
        ``Unavailable`` (503) goes out: a refused request leaves no message behind.
        """
        if not messages:
            return
        docs = [_message_doc(message) for message in messages]
        ids = [doc["_id"] for doc in docs]
        attempts = 0

        async def insert() -> None:
            nonlocal attempts
            attempts += 1
            todo = docs
            if attempts > 1:
                present = {doc["_id"] async for doc in self._messages.find({"_id": {"$in": ids}}, {"_id": 1})}
                todo = [doc for doc in docs if doc["_id"] not in present]
            if todo:
                await self._insert_ordered(todo)

        try:
            with translated():
                await with_retries("storing messages", insert, self._timeout_s)
        except Unavailable:
            await self._take_back(ids)
            raise

    async def _take_back(self, ids: list[str]) -> None:
        try:
            await with_retries(
                "taking back refused messages",
                lambda: self._messages.delete_many({"_id": {"$in": ids}}),
                UNDO_TIMEOUT_S,
            )
        except (Unavailable, ConnectionFailure, OperationFailure, ExecutionTimeout) as exc:
            log.error(
                "MongoDB: could not take back %d message(s) of a refused request (%s); if an attempt stored them, "
                "the outbox will deliver them although the caller was answered 503: %s",
                len(ids),
                exc.__class__.__name__,
                ", ".join(ids[:10]),
            )

    async def _insert_ordered(self, docs: list[dict[str, Any]]) -> None:
        # No _translated here: driver faults must reach with_retries as they are.
        try:
            await self._messages.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            errors = duplicates_only(exc)
            # An ordered insert stops at the duplicate, leaving the ones before it.
            # Remove them so a refused batch leaves nothing for the outbox sweeper to
            # publish, as SQLite's transaction does.
            inserted = [doc["_id"] for doc in docs[: exc.details.get("nInserted", 0)]]
            if inserted:
                await self._messages.delete_many({"_id": {"$in": inserted}})
            raise Conflict(
                "a message with this id or channel offset already exists",
                code="duplicate_offset",
                details={"index": errors[0].get("index")},
            ) from exc

    async def get_message(self, app_id: str, message_id: str, now: float) -> Message | None:
        query = {"_id": message_id, "app": app_id, "expires_at": {"$gt": to_datetime(now)}}
        with translated():
            doc = await with_retries("reading a message", lambda: self._messages.find_one(query), self._timeout_s)
        return None if doc is None else _message_from(doc)

    async def read_channel(self, app_id: str, channel: str, after: int, limit: int, now: float) -> list[Message]:
        if limit <= 0:  # MongoDB reads limit 0 as "no limit"
            return []
        query = {
            "app": app_id,
            "channel": channel,
            "offset": {"$gt": after},
            "expires_at": {"$gt": to_datetime(now)},
        }

        async def read() -> list[Message]:
            cursor = self._messages.find(query).sort("offset", ASCENDING).limit(limit)
            return [_message_from(doc) async for doc in cursor]

        with translated():
            return await with_retries("reading a channel", read, self._timeout_s)

    async def advance_status(self, message_ids: Sequence[str], status: str) -> None:
        await advance(self._messages, message_ids, status, self._timeout_s)

    async def unpublished(self, before_ts: int, limit: int, now: float) -> list[Message]:
        if limit <= 0:
            return []
        query = {"published": "pending", "ts": {"$lt": before_ts}, "expires_at": {"$gt": to_datetime(now)}}

        async def read() -> list[Message]:
            cursor = self._messages.find(query).sort("ts", ASCENDING).limit(limit)
            return [_message_from(doc) async for doc in cursor]

        with translated():
            return await with_retries("reading unpublished messages", read, self._timeout_s)

    async def mark_published(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        update = ({"_id": {"$in": list(message_ids)}}, {"$set": {"published": "yes"}})
        with translated():
            await with_retries(
                "marking messages published", lambda: self._messages.update_many(*update), self._timeout_s
            )


async def advance(
    messages: AsyncCollection[dict[str, Any]], message_ids: Sequence[str], status: str, timeout_s: float
) -> None:
    """Move messages forward to ``status``; a message already past it keeps its status."""
    earlier = list(STATUSES[: status_rank(status)])
    if not message_ids or not earlier:
        return
    update = ({"_id": {"$in": list(message_ids)}, "status": {"$in": earlier}}, {"$set": {"status": status}})
    with translated():
        await with_retries("advancing statuses", lambda: messages.update_many(*update), timeout_s)


def _message_doc(message: Message) -> dict[str, Any]:
    """Written by this insert only, never by $set (see store.py): the expiry as a datetime for
    the TTL index, the sender a subdocument."""
    record = message_record(message)
    return {
        "_id": record.pop("id"),
        "app": record.pop("app_id"),
        **record,
        "expires_at": to_datetime(message.expires_at),
    }


def _message_from(doc: Mapping[str, Any]) -> Message:
    return message_from({**doc, "id": doc["_id"], "app_id": doc["app"], "expires_at": to_epoch(doc["expires_at"])})
