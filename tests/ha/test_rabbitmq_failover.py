"""Herald on a three-node RabbitMQ cluster with quorum queues: the node leading the dispatch
queue goes away in the middle of a 300 msg/s stream, and nothing is lost or duplicated.

Every Herald process gets HERALD_AMQP_URL listing the three nodes with the leader first,
so all of them are connected to the node that goes (the worst case): each must reconnect
to a surviving node, its subscriptions come back there, the quorum queues elect new
leaders among the two nodes left, and messages whose publish failed meanwhile are
published again by collect's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from herald.core.names import Names
from herald_client import Operator, Publisher
from tests.cluster.conftest import Cluster, start_cluster
from tests.ha.conftest import RATE, STREAM_S, long_only, report
from tests.support.cleanup import drop_namespace
from tests.support.rabbit_cluster import RabbitCluster, RabbitNode
from tests.support.stalls import duplicates_reaching_the_app, longest_gap
from tests.support.traffic import produce, subscribe, users

pytestmark = pytest.mark.ha

FAULT_AT_S = 1.5


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", ["stop", pytest.param("kill", marks=long_only)])
async def test_losing_the_node_that_leads_the_dispatch_queue_loses_and_duplicates_nothing(
    rabbitmq_cluster: RabbitCluster, redis_url: str, mongo_url: str, tmp_path: Path, fault: str
) -> None:
    await asyncio.to_thread(rabbitmq_cluster.start_stopped_nodes)  # the module's previous test broke one
    first = next(node for node in rabbitmq_cluster.nodes if node.running)
    herald = start_cluster(
        tmp_path, rabbitmq_cluster.amqp_url(first=first), redis_url, mongo_url, HERALD_QUEUE_TYPE="quorum"
    )
    leader: RabbitNode | None = None
    try:
        # The queues were declared through the first node, so it leads them.
        leader = rabbitmq_cluster.leader_of(Names(herald.namespace).work_queues("quorum").dispatch)
        assert leader is first, f"the dispatch queue is led by {leader.node}, not the node everyone uses"
        async with Operator(herald.url("auth"), herald.env["HERALD_ADMIN_TOKEN"]) as operator:
            app = await operator.create_app("rabbitmq-failover")
        async with Publisher(herald.url("auth"), herald.url("collect"), app["api_key"]) as publisher:
            people = users(40)
            audience = await subscribe(publisher, _spread(herald, people))
            faulted: list[float] = []
            work: list[asyncio.Task[None]] = []

            def break_the_leader() -> None:
                faulted.append(time.monotonic())
                assert leader is not None
                action = leader.stop if fault == "stop" else leader.kill
                work.append(asyncio.create_task(asyncio.to_thread(action)))

            started = time.monotonic()
            try:
                tally = await produce(publisher, people, rate=RATE, seconds=STREAM_S, at={FAULT_AT_S: break_the_leader})
                await asyncio.gather(*work)
                await audience.wait_for(tally, 60)
                summary = audience.report(tally)
                missing = sum(len(offsets) for offsets in audience.missing(tally).values())
                duplicates = duplicates_reaching_the_app(audience)
                stall = longest_gap(audience, faulted[0])
                usual = longest_gap(audience, started + 0.5, faulted[0])
                new_leader = rabbitmq_cluster.leader_of(Names(herald.namespace).work_queues("quorum").dispatch)
                line = (
                    f"RabbitMQ cluster, {fault} of the dispatch queue's leader {leader.node} during {RATE} msg/s: "
                    f"{summary} lost={missing} duplicates_reaching_app={duplicates}; stall {stall:.2f} s "
                    f"(longest gap before the fault {usual:.2f} s); new leader {new_leader.node}"
                )
                report(line)
                assert missing == 0, f"{line}\n{herald.logs()}"
                assert duplicates == 0, line
                assert new_leader is not leader, line
            finally:
                await audience.close()
    finally:
        codes = herald.stop_all()
        survivor = next(node for node in rabbitmq_cluster.nodes if node.running)
        with contextlib.suppress(Exception):
            await drop_namespace(herald.namespace, amqp_url=survivor.url, redis_url=redis_url, mongo_url=mongo_url)
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}"


def _spread(cluster: Cluster, people: list[str]) -> dict[str, list[str]]:
    a, b = cluster.ws_url("push-a"), cluster.ws_url("push-b")
    return {user: ([a, b] if index % 2 == 0 else [b, a]) for index, user in enumerate(people)}
