"""Idempotency keys in MongoDB: one claim per key, so a retried request runs once."""

from __future__ import annotations

from pymongo.errors import DuplicateKeyError

from herald.adapters.store.base import CLAIM_TIMEOUT_S, IdempotencyStore
from herald.adapters.store.mongo.connection import MongoConnection, to_datetime, translated
from herald.core.errors import Unavailable

# How often a claim is retried when it keeps disappearing between insert and read
# (released or expired meanwhile): more than that means something is hammering the key.
_CLAIM_ATTEMPTS = 3


class MongoIdempotency(MongoConnection, IdempotencyStore):
    # Idempotency keys -------------------------------------------------------
    async def reserve_idempotency(self, app_id: str, key: str, expires_at: float, now: float) -> str | None:
        # The unique _id is the lock: whoever inserts it owns the key. An expired claim
        # is deleted (only if still expired, so a fresh claim is never removed) and the
        # insert tried again; re-arming it with $set would write a datetime by update.
        # An abandoned claim (in progress past its pending_until, a plain number) is
        # taken over by compare-and-set on that number, so only one caller wins it.
        key_id = f"{app_id}|{key}"
        now_dt = to_datetime(now)
        pending_until = now + CLAIM_TIMEOUT_S
        claim = {"_id": key_id, "result": "", "expires_at": to_datetime(expires_at), "pending_until": pending_until}
        with translated():
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
        with translated():
            await self._idempotency.update_one({"_id": f"{app_id}|{key}"}, {"$set": {"result": result}})

    async def release_idempotency(self, app_id: str, key: str) -> None:
        with translated():
            await self._idempotency.delete_one({"_id": f"{app_id}|{key}"})
