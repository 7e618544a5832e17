"""The cluster store: MongoDB through PyMongo's async API.

The operations used are deliberately few (DESIGN.md section 9): string ``_id``s, inserts,
``$set``/``$inc``/``$max`` updates, ``find_one_and_update`` with ``$inc`` and upsert,
``bulk_write`` (offsets for many channels: a compare-and-set per counter, see
``_compare_and_add``), range queries with sort and limit, unique and TTL indexes. That
keeps the contract tests, which also run against the ``nx-27017`` stand-in, meaningful for
a real mongod. "Insert if absent" is ``insert_one`` catching ``DuplicateKeyError`` on the
``_id``, never ``$setOnInsert``.

Composite ``_id``s join their parts with ``|``: app ids, user ids, group names and channel
names cannot contain it (herald.model's patterns), so each ``_id`` names one record only.

Expiring documents carry a BSON datetime in ``expires_at`` for the TTL indexes, and every
read also filters ``expires_at > now`` because TTL deletion is lazy. A datetime is only
ever written by an insert, never by ``$set``: the stand-in turns ``$set`` datetimes into
strings, which would silently break both the TTL and the filters.

A message's ``data`` is kept as its JSON text rather than as a BSON document: any JSON an
app sends then round-trips exactly (keys with ``$``, ``.`` or NUL, integers past int64
that BSON refuses), and both stores hold the very same bytes.

Replica sets. The collections whose loss would lose an accepted message or a position
(``messages``, ``counters``, ``cursors``, ``members``, ``idempotency``) are written with
``w: "majority"`` (a write that only the primary saw can be rolled back by the next
election: collect would have answered 202 for a message that is gone) and read with read
concern ``"majority"`` (a reader never hands out a message or an offset that a rollback
could take back and give to another message). Retryable writes are on (the driver's
default). The calls that carry messages, offsets and positions retry a primary step-down
within ``HERALD_STORE_TIMEOUT_S`` (retry.py) and answer ``Unavailable`` after it;
``insert_messages`` then takes back whatever its attempts may have written, so a 503 leaves
no message behind for the outbox to deliver (unless the store stays unreachable for that
clean-up too, which is logged). The other calls rely on the driver's single retry.
"""

from __future__ import annotations

from herald.adapters.store.base import Store
from herald.adapters.store.mongo.apps import MongoApps
from herald.adapters.store.mongo.groups import MongoGroups
from herald.adapters.store.mongo.idempotency import MongoIdempotency
from herald.adapters.store.mongo.messages import MongoMessages
from herald.adapters.store.mongo.offsets import MongoOffsets
from herald.adapters.store.mongo.receipts import MongoReceipts


class MongoStore(MongoApps, MongoOffsets, MongoMessages, MongoReceipts, MongoGroups, MongoIdempotency, Store):
    """Every concept of the store, each from its own module, over one client (``MongoConnection``,
    whose constructor takes the URL, the database and the timeout)."""
