"""Group membership in MongoDB."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from herald.adapters.store.base import GroupStore
from herald.adapters.store.mongo.connection import READ_BATCH, MongoConnection, translated
from herald.adapters.store.mongo.retry import with_retries


class MongoGroups(MongoConnection, GroupStore):
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

        with translated():
            return await with_retries("adding a group member", insert, self._timeout_s)

    async def remove_member(self, app_id: str, group: str, user_id: str) -> bool:
        with translated():
            result = await self._members.delete_one({"_id": _member_id(app_id, group, user_id)})
        return result.deleted_count > 0

    async def list_members(self, app_id: str, group: str, after: str, limit: int) -> list[str]:
        if limit <= 0:  # MongoDB reads limit 0 as "no limit"
            return []
        query = {"app": app_id, "group": group, "user": {"$gt": after}}
        with translated():
            cursor = self._members.find(query).sort("user", ASCENDING).limit(limit)
            return [doc["user"] async for doc in cursor]

    async def memberships(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        if not user_ids:
            return {}
        found: dict[str, dict[str, int]] = {}
        with translated():
            query = {"app": app_id, "user": {"$in": list(user_ids)}}
            async for doc in self._members.find(query, batch_size=READ_BATCH):
                found.setdefault(doc["user"], {})[doc["group"]] = int(doc["joined_after"])
        return found


def _member_id(app_id: str, group: str, user_id: str) -> str:
    return f"{app_id}|{group}|{user_id}"
