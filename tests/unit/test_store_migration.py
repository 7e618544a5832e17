"""An SQLite data directory written before a column existed still opens and works."""

import sqlite3
import time
from pathlib import Path

from herald.adapters.store.sqlite import SqliteStore
from herald.core.model import Message, TokenRecord


async def test_a_tokens_table_without_the_device_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, app_id TEXT NOT NULL, user_id TEXT NOT NULL,"
        " expires_at REAL NOT NULL, created_at REAL NOT NULL)"
    )
    conn.close()
    store = SqliteStore(str(path))
    await store.start()
    try:
        now = time.time()
        token = TokenRecord("h", "app_1", "ann", now + 60, now, device="tablet")
        await store.insert_token(token)
        assert await store.get_token("h", now) == token
    finally:
        await store.close()


async def test_a_tokens_table_without_the_publish_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, app_id TEXT NOT NULL, user_id TEXT NOT NULL,"
        " expires_at REAL NOT NULL, created_at REAL NOT NULL, device TEXT)"
    )
    conn.execute("INSERT INTO tokens VALUES ('old', 'app_1', 'ann', ?, 0, NULL)", (time.time() + 60,))
    conn.commit()
    conn.close()
    store = SqliteStore(str(path))
    await store.start()
    try:
        now = time.time()
        old = await store.get_token("old", now)
        assert old is not None and old.publish == ()
        token = TokenRecord("h", "app_1", "ann", now + 60, now, publish=("group:room-*",))
        await store.insert_token(token)
        assert await store.get_token("h", now) == token
    finally:
        await store.close()


async def test_a_messages_table_without_the_sender_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    # The messages table as released before senders: every current column but ``sender``.
    conn.execute(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, app_id TEXT NOT NULL, channel TEXT NOT NULL,"
        ' "offset" INTEGER NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL, ts INTEGER NOT NULL,'
        " expires_at REAL NOT NULL, status TEXT NOT NULL, idempotency_key TEXT, published TEXT NOT NULL,"
        ' UNIQUE (app_id, channel, "offset"))'
    )
    now = time.time()
    conn.execute(
        'INSERT INTO messages (id, app_id, channel, "offset", event, data, ts, expires_at, status, published)'
        " VALUES ('old', 'app_1', 'user:ann', 1, 'e', '{}', ?, ?, 'accepted', 'pending')",
        (int(now * 1000), now + 60),
    )
    conn.commit()
    conn.close()
    store = SqliteStore(str(path))
    await store.start()
    try:
        old = await store.get_message("app_1", "old", now)
        assert old is not None and old.sender is None
        sent = Message("new", "app_1", "user:ann", 2, "e", {"n": 2}, int(now * 1000), now + 60)
        sent.sender = {"user_id": "bob", "conn_id": "c1"}
        await store.insert_messages([sent])
        assert await store.get_message("app_1", "new", now) == sent
        assert [m.sender for m in await store.read_channel("app_1", "user:ann", 0, 10, now)] == [None, sent.sender]
    finally:
        await store.close()
