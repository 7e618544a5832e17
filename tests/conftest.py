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


# --- Running the suite on parallel workers (pytest-xdist; scripts/test uses `-n 2 --dist loadfile`).
#
# Each test file runs whole on one worker, so its module-scoped servers start once; tests/ha
# runs whole on one worker, so the HA engines (a RabbitMQ cluster, Redis Clusters) and its
# timed faults never run beside each other. The files known to be slowest are handed out
# first so that the two workers finish together. What the conftests print at the end of the
# session from lists their tests fill (HA measurements, fuzz counts, screenshots) is recorded
# on the worker and printed by the controller.

# Longest first (seconds from a serial run); the other files follow in collection order.
SLOW_FIRST = (
    "tests/cluster/test_faults.py",  # 143
    "tests/ha",  # 137
    "tests/integration/test_directory_contract.py",  # 52
    "tests/clients/test_js.py",  # 35
    "tests/e2e/test_subscriber.py",  # 33
    "tests/integration/test_bus_contract.py",  # 32
    "tests/cluster/test_operations.py",  # 30
    "tests/fuzz/test_openapi_fuzz.py",  # 29
    "tests/e2e/test_chat_browser.py",  # 29
    "tests/integration/test_bus_work_queues_contract.py",  # 25
    "tests/cluster/test_guarantees.py",  # 24
    "tests/e2e/test_refresh_browser.py",  # 22
)


def _scope(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "tests/ha" if path.startswith("tests/ha/") else path


def _rank(nodeid: str) -> int:
    scope = _scope(nodeid)
    return next((index for index, slow in enumerate(SLOW_FIRST) if scope == slow), len(SLOW_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: _rank(item.nodeid))  # stable: files keep their inner order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Files(LoadFileScheduling):
        """A file per unit of work, tests/ha as one unit; units in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False
    return Files(config, log)


class _SummaryRecorder:
    """Stands in for the terminal reporter on a worker: records what the summaries write."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def section(self, title: str, *args: object, **kwargs: object) -> None:
        self.calls.append(("section", [str(title)]))

    def write_line(self, line: str, *args: object, **kwargs: object) -> None:
        self.calls.append(("write_line", [str(line)]))


# On the controller: each conftest's summary, as the workers wrote it, by the conftest's path.
_WORKER_SUMMARIES: dict[str, list[tuple[str, list[str]]]] = {}
_TESTS_DIR = Path(__file__).parent


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not hasattr(config, "workeroutput"):
        return
    summaries: dict[str, list[tuple[str, list[str]]]] = {}
    for impl in config.pluginmanager.hook.pytest_terminal_summary.get_hookimpls():
        module = getattr(impl.plugin, "__file__", None)
        if module is None or impl.function is pytest_terminal_summary or _TESTS_DIR not in Path(module).parents:
            continue
        recorder = _SummaryRecorder()
        impl.function(**{name: {"terminalreporter": recorder, "config": config}[name] for name in impl.argnames})
        if recorder.calls:
            summaries[module] = recorder.calls
    config.workeroutput["herald_summaries"] = summaries


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    for module, calls in getattr(node, "workeroutput", {}).get("herald_summaries", {}).items():
        merged = _WORKER_SUMMARIES.setdefault(module, [])
        titles = {args[0] for method, args in merged if method == "section"}
        merged.extend(call for call in calls if not (call[0] == "section" and call[1][0] in titles))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for calls in _WORKER_SUMMARIES.values():
        for method, args in calls:
            getattr(terminalreporter, method)(*args)
