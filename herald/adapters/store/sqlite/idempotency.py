"""Idempotency keys in SQLite: one claim per key, so a retried request runs once."""

from __future__ import annotations

import sqlite3

from herald.adapters.store.base import CLAIM_TIMEOUT_S, IdempotencyStore
from herald.adapters.store.sqlite.worker import SqliteWorker, transaction


class SqliteIdempotency(SqliteWorker, IdempotencyStore):
    # Idempotency keys -------------------------------------------------------
    async def reserve_idempotency(self, app_id: str, key: str, expires_at: float, now: float) -> str | None:
        def work(conn: sqlite3.Connection) -> str | None:
            with transaction(conn):
                row = conn.execute(
                    "SELECT result, pending_until FROM idempotency WHERE app_id = ? AND key = ? AND expires_at > ?",
                    (app_id, key, now),
                ).fetchone()
                if row is not None and (row["result"] or row["pending_until"] > now):
                    return str(row["result"])
                # Absent, expired or abandoned in progress: this call now holds the claim.
                conn.execute(
                    "INSERT INTO idempotency (app_id, key, result, expires_at, pending_until) VALUES (?, ?, '', ?, ?)"
                    " ON CONFLICT (app_id, key) DO UPDATE SET result = '', expires_at = excluded.expires_at,"
                    " pending_until = excluded.pending_until",
                    (app_id, key, expires_at, now + CLAIM_TIMEOUT_S),
                )
                return None

        return await self._run(work)

    async def complete_idempotency(self, app_id: str, key: str, result: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("UPDATE idempotency SET result = ? WHERE app_id = ? AND key = ?", (result, app_id, key))

        await self._run(work)

    async def release_idempotency(self, app_id: str, key: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM idempotency WHERE app_id = ? AND key = ?", (app_id, key))

        await self._run(work)
