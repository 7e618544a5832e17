"""The standalone store: one SQLite file, no server to install.

sqlite3 blocks, so one dedicated worker thread owns the connection and every method runs
its SQL there; having a single writer also makes each method's transaction trivially
atomic. Each method commits before it returns, with ``synchronous=FULL`` in WAL mode, so
what the store acknowledged survives a power cut as the MongoDB store's writes survive
a crash. Expired rows are filtered on every read, and swept now and then as TTL indexes
do for MongoDB.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from herald.adapters.store.base import CLAIM_TIMEOUT_S, Store
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

T = TypeVar("T")

# Seconds a statement waits for a lock held by another process before giving up.
BUSY_TIMEOUT_S = 3.0
# Seconds between sweeps of expired rows (MongoDB's TTL monitor runs about once a minute).
SWEEP_INTERVAL_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    app_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_app ON api_keys (app_id);
CREATE TABLE IF NOT EXISTS app_configs (
    app_id TEXT PRIMARY KEY,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL,
    device TEXT,
    publish TEXT
);
CREATE INDEX IF NOT EXISTS tokens_expires_at ON tokens (expires_at);
CREATE INDEX IF NOT EXISTS tokens_app_user ON tokens (app_id, user_id);
CREATE TABLE IF NOT EXISTS counters (
    app_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (app_id, channel)
);
CREATE TABLE IF NOT EXISTS members (
    app_id TEXT NOT NULL,
    group_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    joined_after INTEGER NOT NULL,
    joined_at REAL NOT NULL,
    PRIMARY KEY (app_id, group_name, user_id)
);
CREATE INDEX IF NOT EXISTS members_user ON members (app_id, user_id);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    ts INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT,
    published TEXT NOT NULL,
    sender TEXT,
    UNIQUE (app_id, channel, "offset")
);
CREATE INDEX IF NOT EXISTS messages_expires_at ON messages (expires_at);
CREATE INDEX IF NOT EXISTS messages_published_ts ON messages (published, ts);
CREATE TABLE IF NOT EXISTS cursors (
    app_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (app_id, user_id, channel)
);
CREATE TABLE IF NOT EXISTS deliveries (
    message_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    device TEXT,
    delivered_at REAL NOT NULL,
    acked_at REAL NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL,
    PRIMARY KEY (message_id, conn_id)
);
CREATE INDEX IF NOT EXISTS deliveries_conn ON deliveries (conn_id, channel, "offset");
CREATE INDEX IF NOT EXISTS deliveries_expires_at ON deliveries (expires_at);
CREATE TABLE IF NOT EXISTS idempotency (
    app_id TEXT NOT NULL,
    key TEXT NOT NULL,
    result TEXT NOT NULL,
    expires_at REAL NOT NULL,
    pending_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_expires_at ON idempotency (expires_at);
"""

# A cursor only ever moves forward.
_RAISE_CURSOR = (
    'INSERT INTO cursors (app_id, user_id, channel, "offset") VALUES (?, ?, ?, ?)'
    ' ON CONFLICT (app_id, user_id, channel) DO UPDATE SET "offset" = MAX("offset", excluded."offset")'
)
_EXPIRING_TABLES = ("messages", "tokens", "idempotency", "deliveries")
_MESSAGE_COLUMNS = (
    'id, app_id, channel, "offset", event, data, ts, expires_at, status, idempotency_key, published, sender'
)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the lock up front so it never fails half-way on it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT can leave it open; the next BEGIN would fail
            conn.execute("ROLLBACK")
        raise


# Columns added after a table was first released: (table, column, declaration).
_ADDED_COLUMNS = (
    ("tokens", "device", "TEXT"),
    ("tokens", "publish", "TEXT"),
    ("messages", "sender", "TEXT"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a data directory written by an earlier version up to the current schema."""
    for table, column, declaration in _ADDED_COLUMNS:
        present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


class SqliteStore(Store):
    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herald-sqlite")
        # Touched only on the worker thread.
        self._conn: sqlite3.Connection | None = None
        self._last_sweep = 0.0
        self._closed = False

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the worker thread, in the store's error vocabulary."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._on_worker, work)
        except sqlite3.OperationalError as exc:  # locked, disk full, unreadable file
            raise Unavailable(f"SQLite unavailable: {exc}", code="store_unavailable") from exc
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"already exists: {exc}", code="duplicate") from exc

    def _on_worker(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise RuntimeError("SqliteStore used before start() or after close()")
        now = time.time()
        if now - self._last_sweep >= SWEEP_INTERVAL_S:
            self._last_sweep = now
            with _transaction(self._conn):
                for table in _EXPIRING_TABLES:
                    self._conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))
        return work(self._conn)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open)
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"SQLite unavailable: {exc}", code="store_unavailable") from exc

    def _open(self) -> None:
        if self._conn is not None:
            return
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (_transaction), never implicit.
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    # Apps and their API keys ------------------------------------------------
    async def insert_app(self, app: App) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO apps (app_id, name, created_at) VALUES (?, ?, ?)",
                    (app.app_id, app.name, app.created_at),
                )

        await self._run(work)

    async def get_app(self, app_id: str) -> App | None:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            return conn.execute("SELECT * FROM apps WHERE app_id = ?", (app_id,)).fetchone()

        row = await self._run(work)
        return None if row is None else App(app_id=row["app_id"], name=row["name"], created_at=row["created_at"])

    async def replace_api_key(self, app_id: str, key_hash: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM api_keys WHERE app_id = ? AND key_hash != ?", (app_id, key_hash))
                conn.execute(
                    "INSERT INTO api_keys (key_hash, app_id) VALUES (?, ?)"
                    " ON CONFLICT (key_hash) DO UPDATE SET app_id = excluded.app_id",
                    (key_hash, app_id),
                )

        await self._run(work)

    async def app_for_key(self, key_hash: str) -> str | None:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            return conn.execute("SELECT app_id FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()

        row = await self._run(work)
        return None if row is None else row["app_id"]

    async def get_app_config(self, app_id: str) -> AppConfig:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            return conn.execute("SELECT config FROM app_configs WHERE app_id = ?", (app_id,)).fetchone()

        row = await self._run(work)
        return AppConfig() if row is None else AppConfig.from_dict(codec.loads(row["config"]))

    async def set_app_config(self, app_id: str, config: AppConfig) -> None:
        # One JSON text, as the MongoDB store keeps it: new settings need no migration.
        text = codec.dumps_text(config.to_dict())

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO app_configs (app_id, config) VALUES (?, ?)"
                    " ON CONFLICT (app_id) DO UPDATE SET config = excluded.config",
                    (app_id, text),
                )

        await self._run(work)

    # User connect tokens ----------------------------------------------------
    async def insert_token(self, token: TokenRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
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
            return conn.execute(
                "SELECT * FROM tokens WHERE token_hash = ? AND expires_at > ?", (token_hash, now)
            ).fetchone()

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
            with _transaction(conn):
                return conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,)).rowcount > 0

        return await self._run(work)

    async def delete_user_tokens(self, app_id: str, user_id: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                return conn.execute("DELETE FROM tokens WHERE app_id = ? AND user_id = ?", (app_id, user_id)).rowcount

        return await self._run(work)

    # Offsets ----------------------------------------------------------------
    async def allocate_offsets(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            allocated = {}
            with _transaction(conn):
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

    # Groups -----------------------------------------------------------------
    async def add_member(self, app_id: str, group: str, user_id: str, joined_after: int, now: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
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
            with _transaction(conn):
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

    async def groups_of(self, app_id: str, user_id: str) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT group_name, joined_after FROM members WHERE app_id = ? AND user_id = ?", (app_id, user_id)
            ).fetchall()

        return {row["group_name"]: int(row["joined_after"]) for row in await self._run(work)}

    # Messages ---------------------------------------------------------------
    async def insert_messages(self, messages: Sequence[Message]) -> None:
        rows = [
            (
                m.id,
                m.app_id,
                m.channel,
                m.offset,
                m.event,
                codec.dumps_text(m.data),
                m.ts,
                m.expires_at,
                m.status,
                m.idempotency_key,
                m.published,
                None if m.sender is None else codec.dumps_text(m.sender),
            )
            for m in messages
        ]

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )

        if rows:
            await self._run(work)

    async def get_message(self, app_id: str, message_id: str, now: float) -> Message | None:
        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            return conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND app_id = ? AND expires_at > ?",
                (message_id, app_id, now),
            ).fetchone()

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
        earlier = STATUSES[: status_rank(status)]
        if not message_ids or not earlier:
            return
        marks = ", ".join("?" * len(earlier))

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    f"UPDATE messages SET status = ? WHERE id = ? AND status IN ({marks})",
                    [(status, message_id, *earlier) for message_id in message_ids],
                )

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
            with _transaction(conn):
                conn.executemany("UPDATE messages SET published = 'yes' WHERE id = ?", [(i,) for i in message_ids])

        if message_ids:
            await self._run(work)

    # Acknowledged positions -------------------------------------------------
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
        earlier = STATUSES[: status_rank("delivered")]
        marks = ", ".join("?" * len(earlier))
        ids = sorted({d.message_id for d in deliveries})

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    'INSERT OR IGNORE INTO deliveries (message_id, conn_id, app_id, channel, "offset", device,'
                    " delivered_at, acked_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.executemany(
                    f"UPDATE messages SET status = 'delivered' WHERE id = ? AND status IN ({marks})",
                    [(i, *earlier) for i in ids],
                )

        if rows:
            await self._run(work)

    async def record_ack(
        self, app_id: str, user_id: str, conn_id: str, positions: Mapping[str, int], at: float
    ) -> None:
        earlier = STATUSES[: status_rank("acked")]
        marks = ", ".join("?" * len(earlier))

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
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

        return [
            Delivery(
                message_id=row["message_id"],
                app_id=row["app_id"],
                channel=row["channel"],
                offset=int(row["offset"]),
                conn_id=row["conn_id"],
                device=row["device"],
                delivered_at=row["delivered_at"],
                acked_at=row["acked_at"],
            )
            for row in await self._run(work)
        ]

    async def save_cursors(self, app_id: str, user_id: str, positions: Mapping[str, int]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    _RAISE_CURSOR, [(app_id, user_id, channel, offset) for channel, offset in positions.items()]
                )

        if positions:
            await self._run(work)

    async def get_cursors(self, app_id: str, user_id: str) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                'SELECT channel, "offset" FROM cursors WHERE app_id = ? AND user_id = ?', (app_id, user_id)
            ).fetchall()

        return {row["channel"]: int(row["offset"]) for row in await self._run(work)}

    # Idempotency keys -------------------------------------------------------
    async def reserve_idempotency(self, app_id: str, key: str, expires_at: float, now: float) -> str | None:
        def work(conn: sqlite3.Connection) -> str | None:
            with _transaction(conn):
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
            with _transaction(conn):
                conn.execute("UPDATE idempotency SET result = ? WHERE app_id = ? AND key = ?", (result, app_id, key))

        await self._run(work)

    async def release_idempotency(self, app_id: str, key: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM idempotency WHERE app_id = ? AND key = ?", (app_id, key))

        await self._run(work)


def _token_from(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        token_hash=row["token_hash"],
        app_id=row["app_id"],
        user_id=row["user_id"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        device=row["device"],
        publish=tuple(codec.loads(row["publish"])) if row["publish"] else (),
    )


def _message_from(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        app_id=row["app_id"],
        channel=row["channel"],
        offset=int(row["offset"]),
        event=row["event"],
        data=codec.loads(row["data"]),
        ts=int(row["ts"]),
        expires_at=row["expires_at"],
        status=row["status"],
        idempotency_key=row["idempotency_key"],
        published=row["published"],
        sender=None if row["sender"] is None else codec.loads(row["sender"]),
    )
