"""An SQLite data directory written before a column existed still opens and works."""

import sqlite3
import time
from pathlib import Path

from herald.model import TokenRecord
from herald.store.sqlite import SqliteStore


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
