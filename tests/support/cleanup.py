"""Delete what a test namespace left on the shared servers. Best effort, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from herald.adapters.bus.base import RETRY_DELAYS_S
from herald.core.names import QUEUE_TYPES, Names


async def drop_namespace(namespace: str, *, amqp_url: str, redis_url: str, mongo_url: str) -> None:
    names = Names(namespace)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_drop_redis(names, redis_url), 10)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_drop_amqp(names, amqp_url), 10)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_drop_mongo(namespace, mongo_url), 10)


# Consumer groups of the events exchange that tests and services declare: dispatch's
# webhook senders, and the queues tests bind to watch events.
EVENT_GROUPS = ("webhooks", "watch")


async def _drop_redis(names: Names, url: str) -> None:
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=names.key_pattern, count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


async def _drop_amqp(names: Names, url: str) -> None:
    # The first node of a list is enough: every node of a cluster sees the same queues.
    connection = await aio_pika.connect(url.split(",")[0], timeout=5)
    try:
        channel = await connection.channel()
        for queue_type in QUEUE_TYPES:
            queues = names.work_queues(queue_type)
            for name in (queues.dispatch, queues.receipts, queues.retries, queues.dead):
                await channel.queue_delete(name)
            for step in RETRY_DELAYS_S:
                await channel.queue_delete(queues.delay(int(step * 1000)))
        await channel.exchange_delete(names.dispatch_exchange)
        await channel.exchange_delete(names.dead_letter_exchange)
        await channel.exchange_delete(names.nodes_exchange)
        for group in EVENT_GROUPS:
            await channel.queue_delete(names.events_queue(group))
        await channel.exchange_delete(names.events_exchange)
    finally:
        await connection.close()


async def _drop_mongo(namespace: str, url: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        await client.drop_database(namespace)
    finally:
        await client.close()
