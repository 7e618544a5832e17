"""What reached whom, in SQLite: per-connection deliveries, acknowledgements, cursors."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from herald.adapters.store.base import ReceiptStore
from herald.adapters.store.records import delivery_from
from herald.adapters.store.sqlite.messages import advance
from herald.adapters.store.sqlite.worker import SqliteWorker, transaction
from herald.core.model import DELIVERY_RETENTION_S, STATUSES, Delivery, status_rank

# A cursor only ever moves forward.
_RAISE_CURSOR = (
    'INSERT INTO cursors (app_id, user_id, channel, "offset") VALUES (?, ?, ?, ?)'
    ' ON CONFLICT (app_id, user_id, channel) DO UPDATE SET "offset" = MAX("offset", excluded."offset")'
)


class SqliteReceipts(SqliteWorker, ReceiptStore):
    # Deliveries -------------------------------------------------------------
    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        rows = [
            (
                d.message_id,
                d.conn_id,
                d.app_id,
                d.channel,
                d.offset,
                d.device,
                d.delivered_at,
                d.acked_at,
                d.delivered_at + DELIVERY_RETENTION_S,
            )
            for d in deliveries
        ]
        ids = sorted({d.message_id for d in deliveries})

        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(
                    'INSERT OR IGNORE INTO deliveries (message_id, conn_id, app_id, channel, "offset", device,'
                    " delivered_at, acked_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                advance(conn, ids, "delivered")

        if rows:
            await self._run(work)

    async def record_ack(
        self, app_id: str, user_id: str, conn_id: str, positions: Mapping[str, int], at: float
    ) -> None:
        earlier = STATUSES[: status_rank("acked")]
        marks = ", ".join("?" * len(earlier))

        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                for channel, offset in positions.items():
                    conn.execute(_RAISE_CURSOR, (app_id, user_id, channel, offset))
                    conn.execute(
                        'UPDATE deliveries SET acked_at = ? WHERE conn_id = ? AND channel = ? AND "offset" <= ?'
                        " AND acked_at = 0",
                        (at, conn_id, channel, offset),
                    )
                    conn.execute(
                        f"UPDATE messages SET status = 'acked' WHERE app_id = ? AND channel = ? AND \"offset\" <= ?"
                        f" AND status IN ({marks})",
                        (app_id, channel, offset, *earlier),
                    )

        if positions:
            await self._run(work)

    async def deliveries_of(self, app_id: str, message_id: str) -> list[Delivery]:
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                'SELECT message_id, app_id, channel, "offset", conn_id, device, delivered_at, acked_at'
                " FROM deliveries WHERE message_id = ? AND app_id = ? ORDER BY delivered_at",
                (message_id, app_id),
            ).fetchall()

        return [delivery_from(dict(row)) for row in await self._run(work)]

    # Acknowledged positions -------------------------------------------------
    async def save_cursors(self, app_id: str, user_id: str, positions: Mapping[str, int]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(
                    _RAISE_CURSOR, [(app_id, user_id, channel, offset) for channel, offset in positions.items()]
                )

        if positions:
            await self._run(work)

    async def cursors_of(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                'SELECT user_id, channel, "offset" FROM cursors'
                " WHERE app_id = ? AND user_id IN (SELECT value FROM json_each(?))",
                (app_id, json.dumps(users)),
            ).fetchall()

        users = list(user_ids)
        found: dict[str, dict[str, int]] = {}
        for row in await self._run(work) if users else ():
            found.setdefault(row["user_id"], {})[row["channel"]] = int(row["offset"])
        return found
