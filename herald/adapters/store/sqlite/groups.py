"""Group membership in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from herald.adapters.store.base import GroupStore
from herald.adapters.store.sqlite.worker import SqliteWorker, transaction


class SqliteGroups(SqliteWorker, GroupStore):
    # Groups -----------------------------------------------------------------
    async def add_member(self, app_id: str, group: str, user_id: str, joined_after: int, now: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                # Already a member: nothing is written, the first record and its joined_after stand.
                inserted = conn.execute(
                    "INSERT INTO members (app_id, group_name, user_id, joined_after, joined_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id, group_name, user_id) DO NOTHING",
                    (app_id, group, user_id, joined_after, now),
                )
                return inserted.rowcount > 0

        return await self._run(work)

    async def remove_member(self, app_id: str, group: str, user_id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                deleted = conn.execute(
                    "DELETE FROM members WHERE app_id = ? AND group_name = ? AND user_id = ?", (app_id, group, user_id)
                )
                return deleted.rowcount > 0

        return await self._run(work)

    async def list_members(self, app_id: str, group: str, after: str, limit: int) -> list[str]:
        if limit <= 0:  # SQLite reads a negative limit as "no limit"
            return []

        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT user_id FROM members WHERE app_id = ? AND group_name = ? AND user_id > ?"
                " ORDER BY user_id LIMIT ?",
                (app_id, group, after, limit),
            ).fetchall()

        return [row["user_id"] for row in await self._run(work)]

    async def memberships(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT user_id, group_name, joined_after FROM members"
                " WHERE app_id = ? AND user_id IN (SELECT value FROM json_each(?))",
                (app_id, json.dumps(users)),
            ).fetchall()

        users = list(user_ids)
        found: dict[str, dict[str, int]] = {}
        for row in await self._run(work) if users else ():
            found.setdefault(row["user_id"], {})[row["group_name"]] = int(row["joined_after"])
        return found
