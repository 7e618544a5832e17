"""The SQLite store's one connection, owned by one worker thread.

sqlite3 blocks, so one dedicated worker thread owns the connection and every method runs
its SQL there (``SqliteWorker._run``); having a single writer also makes each method's
transaction trivially atomic. The concept modules beside this one (apps, messages,
receipts, groups, idempotency) each add their methods on top of this class.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from herald.adapters.store.base import StoreLifecycle
from herald.adapters.store.sqlite.schema import EXPIRING_TABLES, SCHEMA, migrate
from herald.core.errors import Conflict, Unavailable

T = TypeVar("T")

# Seconds a statement waits for a lock held by another process before giving up.
BUSY_TIMEOUT_S = 3.0
# Seconds between sweeps of expired rows (MongoDB's TTL monitor runs about once a minute).
SWEEP_INTERVAL_S = 60.0


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the lock up front so it never fails half-way on it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT can leave it open; the next BEGIN would fail
            conn.execute("ROLLBACK")
        raise


class SqliteWorker(StoreLifecycle):
    # One thread writes: a second group commit out at once only waits in its queue, cut
    # small by the window, and more groups mean more transactions and publishes. `herald
    # dev` at 1,000 messages/s: p50 8.8-13 ms with two out, 3.6-5.6 ms with one
    # (docs/BENCHMARKS.md).
    concurrent_writes = 1

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
            with transaction(self._conn):
                for table in EXPIRING_TABLES:
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
        # Autocommit mode: transactions are explicit (transaction()), never implicit.
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            migrate(conn)
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
