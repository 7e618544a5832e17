"""Messages and their channels' offsets in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from herald.adapters.store.base import MessageStore, OffsetStore
from herald.adapters.store.records import MESSAGE_FIELDS, message_from, message_record
from herald.adapters.store.sqlite.worker import SqliteWorker, transaction
from herald.core import codec
from herald.core.model import STATUSES, Message, status_rank

_MESSAGE_COLUMNS = ", ".join(f'"{field}"' if field == "offset" else field for field in MESSAGE_FIELDS)
_MARKS = ", ".join("?" * len(MESSAGE_FIELDS))


class SqliteMessages(SqliteWorker, OffsetStore, MessageStore):
    # Offsets ----------------------------------------------------------------
    async def allocate_offsets(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            allocated = {}
            with transaction(conn):
                for channel, count in counts.items():
                    row = conn.execute(
                        "INSERT INTO counters (app_id, channel, n) VALUES (?, ?, ?)"
                        " ON CONFLICT (app_id, channel) DO UPDATE SET n = n + excluded.n RETURNING n",
                        (app_id, channel, count),
                    ).fetchone()
                    allocated[channel] = int(row["n"])
            return allocated

        return await self._run(work)

    async def channel_heads(self, app_id: str, channels: Sequence[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(channels))
        if not wanted:
            return {}

        # The channels go in as one JSON array: one statement for any number of them,
        # never past SQLite's limit on bound parameters.
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT channel, n FROM counters WHERE app_id = ? AND channel IN (SELECT value FROM json_each(?))",
                (app_id, codec.dumps_text(wanted)),
            ).fetchall()

        found = {row["channel"]: int(row["n"]) for row in await self._run(work)}
        # A channel never written has no counter yet: its head is 0, the offset before the first.
        return {channel: found.get(channel, 0) for channel in wanted}

    # Messages ---------------------------------------------------------------
    async def insert_messages(self, messages: Sequence[Message]) -> None:
        rows = [_message_row(m) for m in messages]

        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(
                    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ({_MARKS})",
                    rows,
                )

        if rows:
            await self._run(work)

    async def get_message(self, app_id: str, message_id: str, now: float) -> Message | None:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND app_id = ? AND expires_at > ?",
                (message_id, app_id, now),
            ).fetchone()
            return row

        row = await self._run(work)
        return None if row is None else _message_from(row)

    async def read_channel(self, app_id: str, channel: str, after: int, limit: int, now: float) -> list[Message]:
        if limit <= 0:  # SQLite reads a negative limit as "no limit"
            return []

        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                ' WHERE app_id = ? AND channel = ? AND "offset" > ? AND expires_at > ?'
                ' ORDER BY "offset" LIMIT ?',
                (app_id, channel, after, now, limit),
            ).fetchall()

        return [_message_from(row) for row in await self._run(work)]

    async def advance_status(self, message_ids: Sequence[str], status: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                advance(conn, message_ids, status)

        if status_rank(status) > 0 and message_ids:
            await self._run(work)

    async def unpublished(self, before_ts: int, limit: int, now: float) -> list[Message]:
        if limit <= 0:
            return []

        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                " WHERE published = 'pending' AND ts < ? AND expires_at > ? ORDER BY ts LIMIT ?",
                (before_ts, now, limit),
            ).fetchall()

        return [_message_from(row) for row in await self._run(work)]

    async def mark_published(self, message_ids: Sequence[str]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany("UPDATE messages SET published = 'yes' WHERE id = ?", [(i,) for i in message_ids])

        if message_ids:
            await self._run(work)


def advance(conn: sqlite3.Connection, message_ids: Sequence[str], status: str) -> None:
    """Move messages forward to ``status``, inside the caller's transaction; a message
    already past it keeps its status."""
    earlier = STATUSES[: status_rank(status)]
    if not message_ids or not earlier:
        return
    marks = ", ".join("?" * len(earlier))
    conn.executemany(
        f"UPDATE messages SET status = ? WHERE id = ? AND status IN ({marks})",
        [(status, message_id, *earlier) for message_id in message_ids],
    )


def _message_row(message: Message) -> tuple[object, ...]:
    """A sender is kept as JSON text."""
    record = message_record(message)
    sender = record["sender"]
    record["sender"] = None if sender is None else codec.dumps_text(sender)
    return tuple(record[field] for field in MESSAGE_FIELDS)


def _message_from(row: sqlite3.Row) -> Message:
    sender = row["sender"]
    return message_from({**row, "sender": None if sender is None else codec.loads(sender)})
