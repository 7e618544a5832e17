"""The standalone store: one SQLite file, no server to install.

sqlite3 blocks, so one dedicated worker thread owns the connection and every method runs
its SQL there; having a single writer also makes each method's transaction trivially
atomic. Each method commits before it returns, with ``synchronous=FULL`` in WAL mode, so
what the store acknowledged survives a power cut as the MongoDB store's writes survive
a crash. Expired rows are filtered on every read, and swept now and then as TTL indexes
do for MongoDB.
"""

from __future__ import annotations

from herald.adapters.store.base import Store
from herald.adapters.store.sqlite.apps import SqliteApps
from herald.adapters.store.sqlite.groups import SqliteGroups
from herald.adapters.store.sqlite.idempotency import SqliteIdempotency
from herald.adapters.store.sqlite.messages import SqliteMessages
from herald.adapters.store.sqlite.receipts import SqliteReceipts


class SqliteStore(SqliteApps, SqliteMessages, SqliteReceipts, SqliteGroups, SqliteIdempotency, Store):
    """Every concept of the store, each from its own module, over one worker thread's connection
    (``SqliteWorker``, whose constructor takes the file's path)."""
