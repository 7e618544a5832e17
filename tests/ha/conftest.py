"""Herald on the high-availability forms of its engines, broken on purpose, on this machine.

Every test here is marked ``ha`` (``pytest -m ha`` runs them alone). Each fault test has a
short form that every ``scripts/test`` runs (a few seconds of traffic around the fault) and
a long form behind ``HERALD_TEST_HA=1`` (longer traffic, and the harsher variants). The
measured numbers (messages sent, received, lost, duplicated, the stall) are in every
assertion message and, for a passing run, in the summary at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import rabbit_cluster
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.redis_ha import RedisCluster, redis_server

LONG = os.environ.get("HERALD_TEST_HA") == "1"
# Seconds of traffic at 300 messages a second around each fault.
STREAM_S = 20.0 if LONG else 4.0
RATE = 300

long_only = pytest.mark.skipif(not LONG, reason="a long HA fault test: set HERALD_TEST_HA=1")

REPORTS: list[str] = []


def report(line: str) -> None:
    """Keep a measured result for the session summary (and print it for -s)."""
    REPORTS.append(line)
    print(f"\n{line}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("HA fault tests: what was measured")
        for line in REPORTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def rabbitmq_cluster() -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes from the Debian package, clustered, for one test module."""
    missing = rabbit_cluster.available()
    if missing:
        pytest.skip(missing)
    cluster = RabbitCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def breakable_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of its own for a test module that kills its nodes."""
    if redis_server() is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    cluster = RedisCluster(Path(tmp_path_factory.mktemp("redis-cluster-faults")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
