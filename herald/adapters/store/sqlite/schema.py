"""The SQLite store's tables, and bringing an older data directory up to them."""

from __future__ import annotations

import sqlite3

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

# Swept of expired rows now and then, as MongoDB's TTL indexes do.
EXPIRING_TABLES = ("messages", "tokens", "idempotency", "deliveries")

# Columns added after a table was first released: (table, column, declaration).
_ADDED_COLUMNS = (
    ("tokens", "device", "TEXT"),
    ("tokens", "publish", "TEXT"),
    ("messages", "sender", "TEXT"),
)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a data directory written by an earlier version up to the current schema."""
    for table, column, declaration in _ADDED_COLUMNS:
        present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
