"""What reached whom, in MongoDB: per-connection deliveries, acknowledgements, cursors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.errors import BulkWriteError

from herald.adapters.store.base import ReceiptStore
from herald.adapters.store.mongo.connection import (
    READ_BATCH,
    MongoConnection,
    duplicates_only,
    to_datetime,
    translated,
)
from herald.adapters.store.mongo.messages import advance
from herald.adapters.store.mongo.retry import with_retries
from herald.adapters.store.records import delivery_from
from herald.core.model import DELIVERY_RETENTION_S, STATUSES, Delivery, status_rank


class MongoReceipts(MongoConnection, ReceiptStore):
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
                "expires_at": to_datetime(d.delivered_at + DELIVERY_RETENTION_S),
            }
            for d in deliveries
        ]
        with translated():
            try:
                await self._db.deliveries.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                duplicates_only(exc)  # reported twice (a receipts batch redelivered)
        await advance(self._messages, list({d.message_id for d in deliveries}), "delivered", self._timeout_s)

    async def record_ack(
        self, app_id: str, user_id: str, conn_id: str, positions: Mapping[str, int], at: float
    ) -> None:
        if not positions:
            return
        await self.save_cursors(app_id, user_id, positions)
        earlier = list(STATUSES[: status_rank("acked")])
        with translated():
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
        with translated():
            cursor = self._db.deliveries.find({"message": message_id, "app": app_id}).sort("delivered_at", ASCENDING)
            docs = [doc async for doc in cursor]
        return [_delivery_from(doc) for doc in docs]

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
        with translated():
            # $max upserts by _id: repeating one after a step-down changes nothing.
            await with_retries(
                "saving positions", lambda: self._cursors.bulk_write(updates, ordered=False), self._timeout_s
            )

    async def cursors_of(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        async def read() -> dict[str, dict[str, int]]:
            found: dict[str, dict[str, int]] = {}
            query = {"app": app_id, "user": {"$in": list(user_ids)}}
            async for doc in self._cursors.find(query, batch_size=READ_BATCH):
                found.setdefault(doc["user"], {})[doc["channel"]] = int(doc["offset"])
            return found

        if not user_ids:
            return {}
        with translated():
            return await with_retries("reading positions", read, self._timeout_s)


def _delivery_from(doc: Mapping[str, Any]) -> Delivery:
    """A delivery without a device label keeps "" (SQLite: NULL)."""
    return delivery_from(
        {
            **doc,
            "message_id": doc["message"],
            "app_id": doc["app"],
            "conn_id": doc["conn"],
            "device": doc["device"] or None,
        }
    )
