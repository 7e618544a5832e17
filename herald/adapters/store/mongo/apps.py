"""Apps and their credentials in MongoDB: the app record, its API key, its config, its users'
connect tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from herald.adapters.store.base import AppStore
from herald.adapters.store.mongo.connection import MongoConnection, to_datetime, to_epoch, translated
from herald.adapters.store.records import token_from
from herald.core import codec
from herald.core.model import App, AppConfig, TokenRecord


class MongoApps(MongoConnection, AppStore):
    # Apps and their API keys ------------------------------------------------
    async def insert_app(self, app: App) -> None:
        with translated():
            await self._db.apps.insert_one({"_id": app.app_id, "name": app.name, "created_at": app.created_at})

    async def get_app(self, app_id: str) -> App | None:
        with translated():
            doc = await self._db.apps.find_one({"_id": app_id})
        if doc is None:
            return None
        return App(app_id=doc["_id"], name=doc["name"], created_at=doc["created_at"])

    async def replace_api_key(self, app_id: str, key_hash: str) -> None:
        # New key first, then the old ones go: a failure in between leaves the old key
        # working (retry the rotation) rather than an app locked out with no key at all.
        with translated():
            await self._db.api_keys.update_one({"_id": key_hash}, {"$set": {"app": app_id}}, upsert=True)
            await self._db.api_keys.delete_many({"app": app_id, "_id": {"$ne": key_hash}})

    async def app_for_key(self, key_hash: str) -> str | None:
        with translated():
            doc = await self._db.api_keys.find_one({"_id": key_hash})
        return None if doc is None else doc["app"]

    async def get_app_config(self, app_id: str) -> AppConfig:
        with translated():
            doc = await self._db.app_configs.find_one({"_id": app_id})
        return AppConfig() if doc is None else AppConfig.from_dict(codec.loads(doc["config"]))

    async def set_app_config(self, app_id: str, config: AppConfig) -> None:
        # Its own collection, not a field of the app's document: an upsert into ``apps``
        # would create a nameless app for an id never inserted and make insert_app refuse
        # it later. One JSON string, so a $set replaces the whole config and no field of
        # an earlier one survives.
        with translated():
            await self._db.app_configs.update_one(
                {"_id": app_id}, {"$set": {"config": codec.dumps_text(config.to_dict())}}, upsert=True
            )

    # User connect tokens ----------------------------------------------------
    async def insert_token(self, token: TokenRecord) -> None:
        doc = {
            "_id": token.token_hash,
            "app": token.app_id,
            "user": token.user_id,
            "expires_at": to_datetime(token.expires_at),
            "created_at": token.created_at,
            "device": token.device,
            "publish": list(token.publish),
        }
        with translated():
            await self._db.tokens.insert_one(doc)

    async def get_token(self, token_hash: str, now: float) -> TokenRecord | None:
        with translated():
            doc = await self._db.tokens.find_one({"_id": token_hash, "expires_at": {"$gt": to_datetime(now)}})
        return None if doc is None else _token_from(doc)

    async def get_tokens(self, token_hashes: Sequence[str], now: float) -> dict[str, TokenRecord]:
        wanted = list(dict.fromkeys(token_hashes))
        if not wanted:
            return {}
        query = {"_id": {"$in": wanted}, "expires_at": {"$gt": to_datetime(now)}}
        with translated():
            cursor = self._db.tokens.find(query)
            return {doc["_id"]: _token_from(doc) async for doc in cursor}

    async def delete_token(self, token_hash: str) -> bool:
        with translated():
            result = await self._db.tokens.delete_one({"_id": token_hash})
        return result.deleted_count > 0

    async def delete_user_tokens(self, app_id: str, user_id: str) -> int:
        with translated():
            result = await self._db.tokens.delete_many({"app": app_id, "user": user_id})
        return result.deleted_count


def _token_from(doc: Mapping[str, Any]) -> TokenRecord:
    return token_from(
        {
            **doc,
            "token_hash": doc["_id"],
            "app_id": doc["app"],
            "user_id": doc["user"],
            "expires_at": to_epoch(doc["expires_at"]),
        }
    )
