"""Shared fixtures: the real servers, and a fresh namespace for every test.

RabbitMQ and Redis are the machine's (``HERALD_TEST_AMQP_URL`` / ``HERALD_TEST_REDIS_URL``
override the loopback defaults). MongoDB is a real mongod when ``HERALD_MONGO_URL`` is
set, else an ``nx-27017`` process this session starts and stops. The servers are shared
and may hold other data: every test works under its own namespace, and what a test
creates there is deleted after it.
"""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.cleanup import drop_namespace
from tests.support.redis_ha import RedisCluster, RedisSentinel, redis_server
from tests.support.servers import MongoWire

RUN_ID = secrets.token_hex(3)
_counter = iter(range(1, 1_000_000))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ha: Herald on the high-availability forms of its engines (Redis Cluster and Sentinel, a RabbitMQ "
        "cluster); the long fault tests among them also need HERALD_TEST_HA=1",
    )


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three primaries and three replicas of Debian's redis-server, for this session."""
    if redis_server() is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    cluster = RedisCluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A primary, a replica and three sentinels, for this session."""
    if redis_server() is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    sentinel = RedisSentinel(Path(tmp_path_factory.mktemp("redis-sentinel")))
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return os.environ.get("HERALD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    real = os.environ.get("HERALD_MONGO_URL")
    if real:
        yield real
        return
    server = MongoWire(Path(tmp_path_factory.mktemp("mongo-wire")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def namespace(amqp_url: str, redis_url: str, mongo_url: str) -> AsyncIterator[str]:
    """A namespace no other test or run uses; its keys, queues and database go afterwards."""
    ns = f"t{RUN_ID}_{next(_counter)}"
    yield ns
    await drop_namespace(ns, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url)


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off for the test: what reference counting does not free at
    once is left for a full collection, which push nodes run rarely (issue 18)."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()
