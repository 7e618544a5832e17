"""Build the adapters a process needs from its settings: a real server where its URL is set,
the embedded twin otherwise (standalone only; cluster settings refuse missing URLs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.names import Names
from herald.core.settings import Settings
from herald.ops.runtime import Part

# What each service opens. A service never gets an adapter it has no use for.
NEEDS: dict[str, frozenset[str]] = {
    "auth": frozenset({"store", "directory", "bus"}),  # revoking a token closes its connections
    "collect": frozenset({"store", "directory", "bus"}),
    "dispatch": frozenset({"store", "directory", "bus"}),
    "push": frozenset({"store", "directory", "bus"}),
}


@dataclass
class Adapters:
    store: Store | None = None
    directory: Directory | None = None
    bus: Bus | None = None

    def parts(self) -> list[Part]:
        """Opened first, closed last: the store, the directory, then the bus."""
        present = [("store", self.store), ("directory", self.directory), ("bus", self.bus)]
        return [Part(name, adapter.start, adapter.close) for name, adapter in present if adapter is not None]


def make_store(settings: Settings) -> Store:
    if settings.mongo_url:
        from herald.adapters.store.mongo import MongoStore

        return MongoStore(settings.mongo_url, settings.mongo_db, settings.store_timeout_s)
    from herald.adapters.store.sqlite import SqliteStore

    return SqliteStore(os.path.join(settings.data_dir, "herald.db"))


def make_directory(settings: Settings) -> Directory:
    if settings.uses_redis:
        from herald.adapters.directory.redis import RedisDirectory

        return RedisDirectory(
            settings.redis_url,
            Names(settings.namespace),
            mode=settings.redis_mode,
            sentinels=settings.redis_sentinels,
            master=settings.redis_master,
        )
    from herald.adapters.directory.memory import MemoryDirectory

    return MemoryDirectory()


def make_bus(settings: Settings) -> Bus:
    if settings.amqp_url:
        from herald.adapters.bus.amqp import AmqpBus

        return AmqpBus(
            settings.amqp_urls,
            Names(settings.namespace),
            prefetch=settings.prefetch,
            node_queue_expires_s=max(60.0, settings.presence_ttl_s * 4),
            queue_type=settings.queue_type,
            delivery_limit=settings.delivery_limit,
        )
    from herald.adapters.bus.memory import MemoryBus

    return MemoryBus(delivery_limit=settings.delivery_limit)


def make_adapters(settings: Settings, needs: frozenset[str]) -> Adapters:
    return Adapters(
        store=make_store(settings) if "store" in needs else None,
        directory=make_directory(settings) if "directory" in needs else None,
        bus=make_bus(settings) if "bus" in needs else None,
    )
