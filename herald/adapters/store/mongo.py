"""The cluster store: MongoDB through PyMongo's async API.

The operations used are deliberately few (DESIGN.md section 9): string ``_id``s, inserts,
``$set``/``$inc``/``$max`` updates, ``find_one_and_update`` with ``$inc`` and upsert,
``bulk_write`` (offsets for many channels: a compare-and-set per counter, see
``_compare_and_add``), range queries with sort and limit, unique and TTL indexes. That
keeps the contract tests, which also run against the ``nx-27017`` stand-in, meaningful for
a real mongod. "Insert if absent" is ``insert_one`` catching ``DuplicateKeyError`` on the
``_id``, never ``$setOnInsert``.

Composite ``_id``s join their parts with ``|``: app ids, user ids, group names and channel
names cannot contain it (herald.model's patterns), so each ``_id`` names one record only.

Expiring documents carry a BSON datetime in ``expires_at`` for the TTL indexes, and every
read also filters ``expires_at > now`` because TTL deletion is lazy. A datetime is only
ever written by an insert, never by ``$set``: the stand-in turns ``$set`` datetimes into
strings, which would silently break both the TTL and the filters.

A message's ``data`` is kept as its JSON text rather than as a BSON document: any JSON an
app sends then round-trips exactly (keys with ``$``, ``.`` or NUL, integers past int64
that BSON refuses), and both stores hold the very same bytes.

Replica sets. The collections whose loss would lose an accepted message or a position
(``messages``, ``counters``, ``cursors``, ``members``, ``idempotency``) are written with
``w: "majority"`` (a write that only the primary saw can be rolled back by the next
election: collect would have answered 202 for a message that is gone) and read with read
concern ``"majority"`` (a reader never hands out a message or an offset that a rollback
could take back and give to another message). Retryable writes are on (the driver's
default). The calls that carry messages, offsets and positions retry a primary step-down
within ``HERALD_STORE_TIMEOUT_S`` (``mongo_retry``) and answer ``Unavailable`` after it;
``insert_messages`` then takes back whatever its attempts may have written, so a 503 leaves
no message behind for the outbox to deliver (unless the store stays unreachable for that
clean-up too, which is logged). The other calls rely on the driver's single retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, UpdateOne, WriteConcern
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

from herald.adapters.store.base import CLAIM_TIMEOUT_S, Store
from herald.adapters.store.mongo_retry import NOT_PRIMARY_CODES, log, with_retries
from herald.core import codec
from herald.core.errors import Conflict, Unavailable
from herald.core.model import (
    DELIVERY_RETENTION_S,
    STATUSES,
    App,
    AppConfig,
    Delivery,
    Message,
    TokenRecord,
    status_rank,
)

# Faults worth retrying: the server is unreachable, slow, or changing primaries.
# ConnectionFailure covers AutoReconnect, NotPrimaryError, NetworkTimeout and
# ServerSelectionTimeoutError. Everything else is a bug and surfaces as itself.
RETRYABLE: tuple[type[Exception], ...] = (ConnectionFailure, ExecutionTimeout, WTimeoutError)

DUPLICATE_KEY = 11000

# Channels from which one allocation reads and raises counters in bulk rather than
# with a find_one_and_update each: two round trips against one per channel.
_BULK_ALLOCATION_MIN = 3
# Compare-and-set rounds before the counters still contended are raised with $inc.
_COMPARE_AND_ADD_ROUNDS = 3

# How often a claim is retried when it keeps disappearing between insert and read
# (released or expired meanwhile): more than that means something is hammering the key.
_CLAIM_ATTEMPTS = 3


def _to_datetime(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _to_epoch(value: datetime) -> float:
    """Drivers and servers differ on returning naive or aware datetimes; naive ones are UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# How long taking back a failed insert of messages may wait (after the deadline passed).
UNDO_TIMEOUT_S = 2.0


@contextmanager
def _translated() -> Iterator[None]:
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


class MongoStore(Store):
    def __init__(self, url: str, database: str, timeout_s: float = 3.0) -> None:
        timeout_ms = int(timeout_s * 1000)
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
        # Counter ids with an allocation of this process in flight -> when it is done.
        self._busy_counters: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        db = self._db
        with _translated():
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
        with _translated():
            await self._client.admin.command("ping")

    # Apps and their API keys ------------------------------------------------
    async def insert_app(self, app: App) -> None:
        with _translated():
            await self._db.apps.insert_one({"_id": app.app_id, "name": app.name, "created_at": app.created_at})

    async def get_app(self, app_id: str) -> App | None:
        with _translated():
            doc = await self._db.apps.find_one({"_id": app_id})
        if doc is None:
            return None
        return App(app_id=doc["_id"], name=doc["name"], created_at=doc["created_at"])

    async def replace_api_key(self, app_id: str, key_hash: str) -> None:
        # New key first, then the old ones go: a failure in between leaves the old key
        # working (retry the rotation) rather than an app locked out with no key at all.
        with _translated():
            await self._db.api_keys.update_one({"_id": key_hash}, {"$set": {"app": app_id}}, upsert=True)
            await self._db.api_keys.delete_many({"app": app_id, "_id": {"$ne": key_hash}})

    async def app_for_key(self, key_hash: str) -> str | None:
        with _translated():
            doc = await self._db.api_keys.find_one({"_id": key_hash})
        return None if doc is None else doc["app"]

    async def get_app_config(self, app_id: str) -> AppConfig:
        with _translated():
            doc = await self._db.app_configs.find_one({"_id": app_id})
        return AppConfig() if doc is None else AppConfig.from_dict(codec.loads(doc["config"]))

    async def set_app_config(self, app_id: str, config: AppConfig) -> None:
        # Its own collection, not a field of the app's document: an upsert into ``apps``
        # would create a nameless app for an id never inserted and make insert_app refuse
        # it later. One JSON string, so a $set replaces the whole config and no field of
        # an earlier one survives.
        with _translated():
            await self._db.app_configs.update_one(
                {"_id": app_id}, {"$set": {"config": codec.dumps_text(config.to_dict())}}, upsert=True
            )

    # User connect tokens ----------------------------------------------------
    async def insert_token(self, token: TokenRecord) -> None:
        doc = {
            "_id": token.token_hash,
            "app": token.app_id,
            "user": token.user_id,
            "expires_at": _to_datetime(token.expires_at),
            "created_at": token.created_at,
            "device": token.device,
            "publish": list(token.publish),
        }
        with _translated():
            await self._db.tokens.insert_one(doc)

    async def get_token(self, token_hash: str, now: float) -> TokenRecord | None:
        with _translated():
            doc = await self._db.tokens.find_one({"_id": token_hash, "expires_at": {"$gt": _to_datetime(now)}})
        return None if doc is None else _token_from(doc)

    async def get_tokens(self, token_hashes: Sequence[str], now: float) -> dict[str, TokenRecord]:
        wanted = list(dict.fromkeys(token_hashes))
        if not wanted:
            return {}
        query = {"_id": {"$in": wanted}, "expires_at": {"$gt": _to_datetime(now)}}
        with _translated():
            cursor = self._db.tokens.find(query)
            return {doc["_id"]: _token_from(doc) async for doc in cursor}

    async def delete_token(self, token_hash: str) -> bool:
        with _translated():
            result = await self._db.tokens.delete_one({"_id": token_hash})
        return result.deleted_count > 0

    async def delete_user_tokens(self, app_id: str, user_id: str) -> int:
        with _translated():
            result = await self._db.tokens.delete_many({"app": app_id, "user": user_id})
        return result.deleted_count

    # Offsets ----------------------------------------------------------------
    async def allocate_offsets(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        # A few channels: one atomic $inc each, in flight together. Many (a batch to a
        # thousand users, a group commit of many requests): read the counters and raise
        # each by compare-and-set, all in one bulk write (see _compare_and_add). The two
        # interleave safely, with each other and across processes: every write is a
        # single-document atomic update of the counter itself.
        if not counts:
            return {}
        async with self._allocating([_counter_id(app_id, channel) for channel in counts]):
            with _translated():
                # Retried whole after a step-down: a counter an attempt already raised is
                # raised again, leaving a gap of offsets nobody holds (readers skip gaps).
                allocated = await with_retries(
                    "allocating offsets", lambda: self._allocate(app_id, counts), self._timeout_s
                )
        return {channel: allocated[channel] for channel in counts}

    async def _allocate(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        if len(counts) < _BULK_ALLOCATION_MIN:
            return await self._increment_each(app_id, counts)
        allocated: dict[str, int] = {}
        pending = dict(counts)
        for _ in range(_COMPARE_AND_ADD_ROUNDS):
            allocated.update(await self._compare_and_add(app_id, pending))
            pending = {channel: n for channel, n in pending.items() if channel not in allocated}
            if not pending:
                break
        else:
            # Contended on every round (other processes writing the same counters):
            # $inc always succeeds, so the rest cannot starve.
            allocated.update(await self._increment_each(app_id, pending))
        return allocated

    @asynccontextmanager
    async def _allocating(self, counter_ids: Sequence[str]) -> AsyncIterator[None]:
        """Wait until no allocation of this process touches these counters, then hold them.

        Concurrent allocations here (group commits, push nodes' publishers) would otherwise
        race each other's compare-and-set on shared counters and redo whole rounds; other
        processes still can, and lose only a round.
        """
        while True:
            busy = {self._busy_counters[i] for i in counter_ids if i in self._busy_counters}
            if not busy:
                break
            await asyncio.wait(busy)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for counter_id in counter_ids:
            self._busy_counters[counter_id] = done
        try:
            yield
        finally:
            for counter_id in counter_ids:
                if self._busy_counters.get(counter_id) is done:
                    del self._busy_counters[counter_id]
            done.set_result(None)

    async def _increment_each(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        channels = list(counts)
        values = await asyncio.gather(*(self._increment(app_id, channel, counts[channel]) for channel in channels))
        return dict(zip(channels, values, strict=True))

    async def _increment(self, app_id: str, channel: str, count: int) -> int:
        args: dict[str, Any] = {
            "filter": {"_id": _counter_id(app_id, channel)},
            "update": {"$inc": {"n": count}},
            "upsert": True,
            "return_document": ReturnDocument.AFTER,
        }
        try:
            doc = await self._counters.find_one_and_update(**args)
        except DuplicateKeyError:
            # Two first allocations of a channel raced to create its counter; servers
            # before 4.2 do not retry that upsert themselves. The counter exists now.
            doc = await self._counters.find_one_and_update(**args)
        return int(doc["n"])

    async def _compare_and_add(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        """One round for many counters: the new values of those raised, absent the others.

        Each counter is read, then updated only if it still holds what was read:
        ``{_id, n: head}`` -> ``$inc n``, with upsert. If another writer got there first
        the filter matches nothing, the upsert tries to insert a second document with
        that ``_id``, and the unique ``_id`` index refuses it: a duplicate-key error at
        that operation's index, so each counter's outcome is known exactly, in two round
        trips for any number of channels (a thousand ``find_one_and_update`` were 40% of
        collect's time on batches). A counter never written (head 0) is created by the
        upsert as ``n = count``. MongoDB retries an upsert's duplicate key itself only when
        the filter is equality on exactly the index's fields and the update leaves them
        alone; this filter has ``n`` too and changes it, so the error always comes back.
        """
        heads = await self.channel_heads(app_id, list(counts))
        channels = list(counts)
        updates = [
            UpdateOne(
                {"_id": _counter_id(app_id, channel), "n": heads[channel]},
                {"$inc": {"n": counts[channel]}},
                upsert=True,
            )
            for channel in channels
        ]
        lost: set[int] = set()
        try:
            await self._counters.bulk_write(updates, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            lost = {int(error["index"]) for error in errors}
        return {
            channel: heads[channel] + counts[channel] for index, channel in enumerate(channels) if index not in lost
        }

    async def channel_heads(self, app_id: str, channels: Sequence[str]) -> dict[str, int]:
        with _translated():
            return await with_retries("reading offset counters", lambda: self._heads(app_id, channels), self._timeout_s)

    async def _heads(self, app_id: str, channels: Sequence[str]) -> dict[str, int]:
        ids = {_counter_id(app_id, channel): channel for channel in channels}
        if not ids:
            return {}
        found = {ids[doc["_id"]]: int(doc["n"]) async for doc in self._counters.find({"_id": {"$in": list(ids)}})}
        # A channel never written has no counter yet: its head is 0, the offset before the first.
        return {channel: found.get(channel, 0) for channel in ids.values()}

    # Groups -----------------------------------------------------------------
    async def add_member(self, app_id: str, group: str, user_id: str, joined_after: int, now: float) -> bool:
        doc = {
            "_id": _member_id(app_id, group, user_id),
            "app": app_id,
            "group": group,
            "user": user_id,
            "joined_after": joined_after,
            "joined_at": now,
        }
        attempts = 0

        async def insert() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                await self._members.insert_one(doc)
            except DuplicateKeyError:
                if attempts > 1:
                    # Perhaps the attempt that failed had written it: then it is this join.
                    found = await self._members.find_one({"_id": doc["_id"]})
                    return found is not None and found.get("joined_at") == now
                return False  # already a member: the first record and its joined_after stand
            return True

        with _translated():
            return await with_retries("adding a group member", insert, self._timeout_s)

    async def remove_member(self, app_id: str, group: str, user_id: str) -> bool:
        with _translated():
            result = await self._members.delete_one({"_id": _member_id(app_id, group, user_id)})
        return result.deleted_count > 0

    async def list_members(self, app_id: str, group: str, after: str, limit: int) -> list[str]:
        if limit <= 0:  # MongoDB reads limit 0 as "no limit"
            return []
        query = {"app": app_id, "group": group, "user": {"$gt": after}}
        with _translated():
            cursor = self._members.find(query).sort("user", ASCENDING).limit(limit)
            return [doc["user"] async for doc in cursor]

    async def groups_of(self, app_id: str, user_id: str) -> dict[str, int]:
        with _translated():
            cursor = self._members.find({"app": app_id, "user": user_id})
            return {doc["group"]: int(doc["joined_after"]) async for doc in cursor}

    # Messages ---------------------------------------------------------------
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
            with _translated():
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
            errors = exc.details.get("writeErrors", [])
            if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
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
        query = {"_id": message_id, "app": app_id, "expires_at": {"$gt": _to_datetime(now)}}
        with _translated():
            doc = await with_retries("reading a message", lambda: self._messages.find_one(query), self._timeout_s)
        return None if doc is None else _message_from(doc)

    async def read_channel(self, app_id: str, channel: str, after: int, limit: int, now: float) -> list[Message]:
        if limit <= 0:  # MongoDB reads limit 0 as "no limit"
            return []
        query = {
            "app": app_id,
            "channel": channel,
            "offset": {"$gt": after},
            "expires_at": {"$gt": _to_datetime(now)},
        }

        async def read() -> list[Message]:
            cursor = self._messages.find(query).sort("offset", ASCENDING).limit(limit)
            return [_message_from(doc) async for doc in cursor]

        with _translated():
            return await with_retries("reading a channel", read, self._timeout_s)

    async def advance_status(self, message_ids: Sequence[str], status: str) -> None:
        earlier = list(STATUSES[: status_rank(status)])
        if not message_ids or not earlier:
            return
        update = ({"_id": {"$in": list(message_ids)}, "status": {"$in": earlier}}, {"$set": {"status": status}})
        with _translated():
            await with_retries("advancing statuses", lambda: self._messages.update_many(*update), self._timeout_s)

    async def unpublished(self, before_ts: int, limit: int, now: float) -> list[Message]:
        if limit <= 0:
            return []
        query = {"published": "pending", "ts": {"$lt": before_ts}, "expires_at": {"$gt": _to_datetime(now)}}

        async def read() -> list[Message]:
            cursor = self._messages.find(query).sort("ts", ASCENDING).limit(limit)
            return [_message_from(doc) async for doc in cursor]

        with _translated():
            return await with_retries("reading unpublished messages", read, self._timeout_s)

    async def mark_published(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        update = ({"_id": {"$in": list(message_ids)}}, {"$set": {"published": "yes"}})
        with _translated():
            await with_retries(
                "marking messages published", lambda: self._messages.update_many(*update), self._timeout_s
            )

    # Receipts -----------------------------------------------------------------
    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        docs = [
            {
                "_id": f"{d.message_id}|{d.conn_id}",
                "message": d.message_id,
                "app": d.app_id,
                "channel": d.channel,
                "offset": d.offset,
                "conn": d.conn_id,
                "device": d.device or "",
                "delivered_at": d.delivered_at,
                "acked_at": d.acked_at,
                "expires_at": _to_datetime(d.delivered_at + DELIVERY_RETENTION_S),
            }
            for d in deliveries
        ]
        with _translated():
            try:
                await self._db.deliveries.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                # Reported twice (a receipts batch redelivered): the first record stands.
                if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                    raise
        await self.advance_status(list({d.message_id for d in deliveries}), "delivered")

    async def record_ack(
        self, app_id: str, user_id: str, conn_id: str, positions: Mapping[str, int], at: float
    ) -> None:
        if not positions:
            return
        await self.save_cursors(app_id, user_id, positions)
        earlier = list(STATUSES[: status_rank("acked")])
        with _translated():
            for channel, offset in positions.items():
                await self._db.deliveries.update_many(
                    {"conn": conn_id, "channel": channel, "offset": {"$lte": offset}, "acked_at": 0},
                    {"$set": {"acked_at": at}},
                )
                await self._messages.update_many(
                    {"app": app_id, "channel": channel, "offset": {"$lte": offset}, "status": {"$in": earlier}},
                    {"$set": {"status": "acked"}},
                )

    async def deliveries_of(self, app_id: str, message_id: str) -> list[Delivery]:
        with _translated():
            cursor = self._db.deliveries.find({"message": message_id, "app": app_id}).sort("delivered_at", ASCENDING)
            docs = [doc async for doc in cursor]
        return [
            Delivery(
                message_id=doc["message"],
                app_id=doc["app"],
                channel=doc["channel"],
                offset=doc["offset"],
                conn_id=doc["conn"],
                device=doc["device"] or None,
                delivered_at=doc["delivered_at"],
                acked_at=doc["acked_at"],
            )
            for doc in docs
        ]

    # Acknowledged positions -------------------------------------------------
    async def save_cursors(self, app_id: str, user_id: str, positions: Mapping[str, int]) -> None:
        if not positions:
            return
        updates = [
            UpdateOne(
                {"_id": f"{app_id}|{user_id}|{channel}"},
                {"$max": {"offset": offset}, "$set": {"app": app_id, "user": user_id, "channel": channel}},
                upsert=True,
            )
            for channel, offset in positions.items()
        ]
        with _translated():
            # $max upserts by _id: repeating one after a step-down changes nothing.
            await with_retries(
                "saving positions", lambda: self._cursors.bulk_write(updates, ordered=False), self._timeout_s
            )

    async def get_cursors(self, app_id: str, user_id: str) -> dict[str, int]:
        async def read() -> dict[str, int]:
            return {
                doc["channel"]: int(doc["offset"]) async for doc in self._cursors.find({"app": app_id, "user": user_id})
            }

        with _translated():
            return await with_retries("reading positions", read, self._timeout_s)

    # Idempotency keys -------------------------------------------------------
    async def reserve_idempotency(self, app_id: str, key: str, expires_at: float, now: float) -> str | None:
        # The unique _id is the lock: whoever inserts it owns the key. An expired claim
        # is deleted (only if still expired, so a fresh claim is never removed) and the
        # insert tried again; re-arming it with $set would write a datetime by update.
        # An abandoned claim (in progress past its pending_until, a plain number) is
        # taken over by compare-and-set on that number, so only one caller wins it.
        key_id = f"{app_id}|{key}"
        now_dt = _to_datetime(now)
        pending_until = now + CLAIM_TIMEOUT_S
        claim = {"_id": key_id, "result": "", "expires_at": _to_datetime(expires_at), "pending_until": pending_until}
        with _translated():
            for _ in range(_CLAIM_ATTEMPTS):
                try:
                    await self._idempotency.insert_one(dict(claim))
                    return None
                except DuplicateKeyError:
                    pass
                doc = await self._idempotency.find_one({"_id": key_id, "expires_at": {"$gt": now_dt}})
                if doc is None:
                    await self._idempotency.delete_one({"_id": key_id, "expires_at": {"$lte": now_dt}})
                    continue
                if doc["result"] or doc.get("pending_until", 0) > now:
                    return str(doc["result"])
                taken = await self._idempotency.update_one(
                    {"_id": key_id, "result": "", "pending_until": doc.get("pending_until", 0)},
                    {"$set": {"pending_until": pending_until}},
                )
                if taken.modified_count == 1:
                    return None
        raise Unavailable("idempotency key is contended; retry", code="store_unavailable")

    async def complete_idempotency(self, app_id: str, key: str, result: str) -> None:
        with _translated():
            await self._idempotency.update_one({"_id": f"{app_id}|{key}"}, {"$set": {"result": result}})

    async def release_idempotency(self, app_id: str, key: str) -> None:
        with _translated():
            await self._idempotency.delete_one({"_id": f"{app_id}|{key}"})


def _token_from(doc: Mapping[str, Any]) -> TokenRecord:
    return TokenRecord(
        token_hash=doc["_id"],
        app_id=doc["app"],
        user_id=doc["user"],
        expires_at=_to_epoch(doc["expires_at"]),
        created_at=doc["created_at"],
        device=doc.get("device"),
        publish=tuple(doc.get("publish") or ()),
    )


def _counter_id(app_id: str, channel: str) -> str:
    return f"{app_id}|{channel}"


def _member_id(app_id: str, group: str, user_id: str) -> str:
    return f"{app_id}|{group}|{user_id}"


def _message_doc(message: Message) -> dict[str, Any]:
    return {
        "_id": message.id,
        "app": message.app_id,
        "channel": message.channel,
        "offset": message.offset,
        "event": message.event,
        "data": codec.dumps_text(message.data),
        "ts": message.ts,
        "expires_at": _to_datetime(message.expires_at),
        "status": message.status,
        "idempotency_key": message.idempotency_key,
        "published": message.published,
        # Written by this insert only, never by $set: a subdocument, or None for API messages.
        "sender": None if message.sender is None else dict(message.sender),
    }


def _message_from(doc: Mapping[str, Any]) -> Message:
    return Message(
        id=doc["_id"],
        app_id=doc["app"],
        channel=doc["channel"],
        offset=int(doc["offset"]),
        event=doc["event"],
        data=codec.loads(doc["data"]),
        ts=int(doc["ts"]),
        expires_at=_to_epoch(doc["expires_at"]),
        status=doc["status"],
        idempotency_key=doc.get("idempotency_key"),
        published=doc["published"],
        sender=None if doc.get("sender") is None else dict(doc["sender"]),
    )
