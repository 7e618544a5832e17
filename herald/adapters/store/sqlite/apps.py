"""Apps and their credentials in SQLite: the app record, its API key, its config, its users'
connect tokens."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from herald.adapters.store.base import AppStore
from herald.adapters.store.records import token_from
from herald.adapters.store.sqlite.worker import SqliteWorker, transaction
from herald.core import codec
from herald.core.model import App, AppConfig, TokenRecord


class SqliteApps(SqliteWorker, AppStore):
    # Apps and their API keys ------------------------------------------------
    async def insert_app(self, app: App) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO apps (app_id, name, created_at) VALUES (?, ?, ?)",
                    (app.app_id, app.name, app.created_at),
                )

        await self._run(work)

    async def get_app(self, app_id: str) -> App | None:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute("SELECT * FROM apps WHERE app_id = ?", (app_id,)).fetchone()
            return row

        row = await self._run(work)
        return None if row is None else App(app_id=row["app_id"], name=row["name"], created_at=row["created_at"])

    async def replace_api_key(self, app_id: str, key_hash: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM api_keys WHERE app_id = ? AND key_hash != ?", (app_id, key_hash))
                conn.execute(
                    "INSERT INTO api_keys (key_hash, app_id) VALUES (?, ?)"
                    " ON CONFLICT (key_hash) DO UPDATE SET app_id = excluded.app_id",
                    (key_hash, app_id),
                )

        await self._run(work)

    async def app_for_key(self, key_hash: str) -> str | None:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                "SELECT app_id FROM api_keys WHERE key_hash = ?", (key_hash,)
            ).fetchone()
            return row

        row = await self._run(work)
        return None if row is None else row["app_id"]

    async def get_app_config(self, app_id: str) -> AppConfig:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                "SELECT config FROM app_configs WHERE app_id = ?", (app_id,)
            ).fetchone()
            return row

        row = await self._run(work)
        return AppConfig() if row is None else AppConfig.from_dict(codec.loads(row["config"]))

    async def set_app_config(self, app_id: str, config: AppConfig) -> None:
        # One JSON text, as the MongoDB store keeps it: new settings need no migration.
        text = codec.dumps_text(config.to_dict())

        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO app_configs (app_id, config) VALUES (?, ?)"
                    " ON CONFLICT (app_id) DO UPDATE SET config = excluded.config",
                    (app_id, text),
                )

        await self._run(work)

    # User connect tokens ----------------------------------------------------
    async def insert_token(self, token: TokenRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO tokens (token_hash, app_id, user_id, expires_at, created_at, device, publish)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        token.token_hash,
                        token.app_id,
                        token.user_id,
                        token.expires_at,
                        token.created_at,
                        token.device,
                        codec.dumps_text(list(token.publish)) if token.publish else None,
                    ),
                )

        await self._run(work)

    async def get_token(self, token_hash: str, now: float) -> TokenRecord | None:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM tokens WHERE token_hash = ? AND expires_at > ?", (token_hash, now)
            ).fetchone()
            return row

        row = await self._run(work)
        return None if row is None else _token_from(row)

    async def get_tokens(self, token_hashes: Sequence[str], now: float) -> dict[str, TokenRecord]:
        wanted = list(dict.fromkeys(token_hashes))
        if not wanted:
            return {}

        # As in channel_heads: the hashes go in as one JSON array, never past SQLite's
        # limit on bound parameters.
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT * FROM tokens WHERE token_hash IN (SELECT value FROM json_each(?)) AND expires_at > ?",
                (codec.dumps_text(wanted), now),
            ).fetchall()

        return {row["token_hash"]: _token_from(row) for row in await self._run(work)}

    async def delete_token(self, token_hash: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                return conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,)).rowcount > 0

        return await self._run(work)

    async def delete_user_tokens(self, app_id: str, user_id: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                return conn.execute("DELETE FROM tokens WHERE app_id = ? AND user_id = ?", (app_id, user_id)).rowcount

        return await self._run(work)


def _token_from(row: sqlite3.Row) -> TokenRecord:
    """Publish patterns are kept as JSON text."""
    return token_from({**row, "publish": codec.loads(row["publish"]) if row["publish"] else ()})
