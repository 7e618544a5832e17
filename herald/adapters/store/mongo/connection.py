"""The MongoDB store's client, collections and indexes, and its translation of driver faults.

The concept modules beside this one (apps, offsets, messages, receipts, groups,
idempotency) each add their methods on top of ``MongoConnection``; what they share is
here: the collections, ``translated`` (driver faults in the store's vocabulary) and the
datetime conversions of expiring fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern

from herald.adapters.store.base import StoreLifecycle
from herald.adapters.store.mongo import wire_waits
from herald.adapters.store.mongo.head_guesses import HeadGuesses
from herald.adapters.store.mongo.retry import NOT_PRIMARY_CODES
from herald.core.errors import Conflict, Unavailable

# Faults worth retrying: the server is unreachable, slow, or changing primaries.
# ConnectionFailure covers AutoReconnect, NotPrimaryError, NetworkTimeout and
# ServerSelectionTimeoutError. Everything else is a bug and surfaces as itself.
RETRYABLE: tuple[type[Exception], ...] = (ConnectionFailure, ExecutionTimeout, WTimeoutError)

DUPLICATE_KEY = 11000


def duplicates_only(exc: BulkWriteError) -> list[dict[str, Any]]:
    """The write errors of a bulk write refused on duplicate keys alone (a write raced or
    redelivered: the first one stands). Re-raises ``exc`` when anything else failed, a
    write concern error (no write errors listed) included."""
    errors: list[dict[str, Any]] = exc.details.get("writeErrors", [])
    if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
        raise exc
    return errors


# Documents in the first reply of the reads that gather a batch of users (a connect storm's
# cursors and memberships): the server's default first batch (101) turned a few hundred
# users' documents into several getMore round trips. The 16 MB reply limit still applies.
READ_BATCH = 10_000


def to_datetime(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def to_epoch(value: datetime) -> float:
    """Drivers and servers differ on returning naive or aware datetimes; naive ones are UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@contextmanager
def translated() -> Iterator[None]:
    """Turn driver faults into the store's vocabulary, so callers never import PyMongo."""
    try:
        yield
    except RETRYABLE as exc:
        raise Unavailable(f"MongoDB unavailable: {exc}", code="store_unavailable") from exc
    except DuplicateKeyError as exc:
        raise Conflict("already exists", code="duplicate") from exc
    except OperationFailure as exc:
        if exc.code in NOT_PRIMARY_CODES or exc.has_error_label("RetryableWriteError"):
            raise Unavailable(f"MongoDB has no primary: {exc}", code="store_unavailable") from exc
        raise


class MongoConnection(StoreLifecycle):
    def __init__(self, url: str, database: str, timeout_s: float = 3.0) -> None:
        timeout_ms = int(timeout_s * 1000)
        wire_waits.install()  # PyMongo's reads and writes without their tasks (see there)
        # Short timeouts everywhere: a down server must become a 503 within about
        # timeout_s, not after PyMongo's default 30 s of server selection.
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
        )
        self._db: AsyncDatabase[dict[str, Any]] = self._client[database]
        self._timeout_s = timeout_s
        durable: dict[str, Any] = {
            "write_concern": WriteConcern(w="majority", wtimeout=timeout_ms),
            "read_concern": ReadConcern("majority"),
        }
        self._messages: AsyncCollection[dict[str, Any]] = self._db.get_collection("messages", **durable)
        self._counters: AsyncCollection[dict[str, Any]] = self._db.get_collection("counters", **durable)
        self._cursors: AsyncCollection[dict[str, Any]] = self._db.get_collection("cursors", **durable)
        self._members: AsyncCollection[dict[str, Any]] = self._db.get_collection("members", **durable)
        self._idempotency: AsyncCollection[dict[str, Any]] = self._db.get_collection("idempotency", **durable)
        # Counter ids with an allocation of this process in flight -> when it is done (offsets.py).
        self._busy_counters: dict[str, asyncio.Future[None]] = {}
        # What those counters held after this process's last writes (offsets.py).
        self._head_guesses = HeadGuesses()

    async def start(self) -> None:
        db = self._db
        with translated():
            await db.api_keys.create_index([("app", ASCENDING)])
            await db.tokens.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
            await db.tokens.create_index([("app", ASCENDING), ("user", ASCENDING)])
            await self._messages.create_index(
                [("app", ASCENDING), ("channel", ASCENDING), ("offset", ASCENDING)], unique=True
            )
            await self._messages.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
            await self._messages.create_index([("published", ASCENDING), ("ts", ASCENDING)])
            await self._cursors.create_index([("app", ASCENDING), ("user", ASCENDING)])
            await self._idempotency.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
            await db.deliveries.create_index([("message", ASCENDING)])
            await db.deliveries.create_index([("conn", ASCENDING), ("channel", ASCENDING), ("offset", ASCENDING)])
            await db.deliveries.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
            await self._members.create_index(
                [("app", ASCENDING), ("group", ASCENDING), ("user", ASCENDING)], unique=True
            )
            await self._members.create_index([("app", ASCENDING), ("user", ASCENDING)])

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        with translated():
            await self._client.admin.command("ping")
