"""The bus's specification, run against RabbitMQ and the in-process implementation alike.

A ``Broker`` (tests/support/buses.py) opens buses the way separate processes would: on
RabbitMQ each ``open()`` is a new connection; in memory one process has one bus, so every
``open()`` returns it. The work queues' failure rules and dead letters have their own
specification (test_bus_work_queues_contract.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity

from herald.adapters.bus.amqp import AmqpBus
from herald.adapters.bus.amqp import bus as amqp_bus
from herald.adapters.bus.amqp import depths as amqp_depths
from herald.adapters.bus.base import Bus
from herald.adapters.bus.memory import MemoryBus
from herald.adapters.bus.memory import bus as memory
from herald.core.errors import Unavailable
from herald.core.names import Names
from tests.support.buses import (
    QUIET_S,
    WAIT_S,
    Batches,
    Broker,
    Changes,
    Inbox,
    TcpProxy,
    batches,
    nothing_left,
    numbered,
)
from tests.support.servers import free_port
from tests.support.waiting import eventually


@pytest.fixture(params=["memory", "amqp"])
async def broker(request: pytest.FixtureRequest, namespace: str, amqp_url: str) -> AsyncIterator[Broker]:
    broker = Broker(request.param, namespace, amqp_url)
    try:
        yield broker
    finally:
        await broker.close_all()


async def test_a_started_bus_answers_ping(broker: Broker) -> None:
    bus = await broker.open()

    await bus.ping()


async def test_queue_depths_count_what_waits_and_leave_out_missing_queues(broker: Broker) -> None:
    bus = await broker.open()
    await bus.consume_node("node-a", Inbox())
    await bus.stop_consuming()  # the queue stays; nothing reads it now
    for body in numbered(3):
        await bus.publish_dispatch(body)
    await bus.publish_to_nodes({"node-a": b"one"})

    depths: dict[str, int] = {}
    async with asyncio.timeout(WAIT_S):
        # The broker counts a publish a moment after confirming it.
        while depths.get("dispatch") != 3 or depths.get("node:node-a") != 1:
            await asyncio.sleep(0.05)
            depths = await bus.queue_depths(["node-a", "node-nobody"])
    assert "node:node-nobody" not in depths


async def test_dispatch_messages_reach_a_consumer_in_order(broker: Broker) -> None:
    bus = await broker.open()
    inbox = Inbox()
    await bus.consume_dispatch(batches(inbox))

    for body in numbered(50):
        await bus.publish_dispatch(body)

    await eventually(lambda: len(inbox.bodies) >= 50)
    assert inbox.bodies == numbered(50)


async def test_receipts_reach_their_own_consumer_in_order_and_never_dispatch(broker: Broker) -> None:
    bus = await broker.open()
    receipts, dispatch = Inbox(), Inbox()
    await bus.consume_receipts(receipts)
    await bus.consume_dispatch(batches(dispatch))

    for body in numbered(20):
        await bus.publish_receipts(body)

    await eventually(lambda: len(receipts.bodies) >= 20)
    assert receipts.bodies == numbered(20)
    assert dispatch.bodies == []


async def test_competing_dispatch_consumers_share_the_work(broker: Broker) -> None:
    first, second = Inbox(delay_s=0.005), Inbox(delay_s=0.005)
    await (await broker.open()).consume_dispatch(batches(first))
    await (await broker.open()).consume_dispatch(batches(second))
    publisher = await broker.open()

    for body in numbered(40):
        await publisher.publish_dispatch(body)
        # Lets a waiting consumer take it: in one process nothing else yields here, and a
        # dispatch consumer takes everything queued at once.
        await asyncio.sleep(0)

    await eventually(lambda: len(first.bodies) + len(second.bodies) >= 40)
    await asyncio.sleep(QUIET_S)
    assert sorted(first.bodies + second.bodies) == numbered(40)
    assert first.bodies and second.bodies


async def test_a_failing_handler_gets_the_message_again(broker: Broker) -> None:
    bus = await broker.open()
    attempts: list[bytes] = []
    handled: list[bytes] = []

    async def fails_once_on_a(body: bytes) -> None:
        attempts.append(body)
        if body == b"a" and attempts.count(b"a") == 1:
            raise RuntimeError("a dependency is down")
        handled.append(body)

    await bus.consume_dispatch(batches(fails_once_on_a))
    await bus.publish_dispatch(b"a")
    await bus.publish_dispatch(b"b")

    await eventually(lambda: len(handled) >= 2)
    assert attempts.count(b"a") == 2
    assert handled == [b"a", b"b"]


async def test_a_redelivered_message_keeps_its_place_in_line(broker: Broker) -> None:
    bus = await broker.open()
    failing = numbered(10)[2]
    failures: list[bytes] = []
    handled: list[bytes] = []

    async def fails_once_on_the_third(body: bytes) -> None:
        if body == failing and not failures:
            failures.append(body)
            raise RuntimeError("a dependency is down")
        handled.append(body)

    await bus.consume_node("node-a", fails_once_on_the_third)
    for body in numbered(10):
        await bus.publish_to_nodes({"node-a": body})

    await eventually(lambda: len(handled) >= 10)
    assert handled == numbered(10)


async def test_a_dispatch_consumer_gets_everything_queued_in_one_call(broker: Broker) -> None:
    bus = await broker.open()
    blocking = asyncio.Event()
    calls: list[list[bytes]] = []

    async def first_call_blocks(bodies: list[bytes]) -> Awaitable[None]:
        calls.append(bodies)
        if len(calls) == 1:
            await blocking.wait()
        return nothing_left()

    await bus.consume_dispatch(first_call_blocks)
    await bus.publish_dispatch(b"first")
    await eventually(lambda: len(calls) == 1)
    for body in numbered(10):
        await bus.publish_dispatch(body)
    await asyncio.sleep(QUIET_S)  # the broker's deliveries reach the consumer's buffer
    blocking.set()

    await eventually(lambda: len(calls) >= 2)
    assert calls == [[b"first"], numbered(10)]


async def test_dispatch_bodies_come_back_when_their_work_fails(broker: Broker) -> None:
    bus = await broker.open()
    handler = Batches(failures=1)
    await bus.consume_dispatch(handler)

    await bus.publish_dispatch(b"a")

    await eventually(lambda: len(handler.calls) >= 2)
    assert handler.bodies[:2] == [b"a", b"a"]


async def test_a_dispatch_consumer_takes_the_next_batch_while_one_settles(broker: Broker) -> None:
    bus = await broker.open()
    handler = Batches(held=True)
    await bus.consume_dispatch(handler)

    await bus.publish_dispatch(b"first")
    await eventually(lambda: len(handler.calls) == 1)
    await bus.publish_dispatch(b"second")

    await eventually(lambda: len(handler.calls) == 2)
    assert handler.calls == [[b"first"], [b"second"]]
    handler.release.set()


async def test_stopping_waits_for_batches_settling_and_acknowledges_them(broker: Broker) -> None:
    bus = await broker.open()
    handler = Batches(held=True)
    await bus.consume_dispatch(handler)
    await bus.publish_dispatch(b"settling")
    await eventually(lambda: len(handler.calls) == 1)

    stopping = asyncio.create_task(bus.stop_consuming())
    await asyncio.sleep(0.1)
    assert not stopping.done()
    handler.release.set()
    await asyncio.wait_for(stopping, WAIT_S)

    inbox = Inbox()
    await bus.consume_dispatch(batches(inbox))
    await bus.publish_dispatch(b"next")
    await eventually(lambda: len(inbox.bodies) >= 1)
    await asyncio.sleep(QUIET_S)
    assert inbox.bodies == [b"next"]


async def test_node_publishes_started_together_arrive_in_the_order_started(broker: Broker) -> None:
    inbox = Inbox()
    await (await broker.open()).consume_node("node-a", inbox)
    dispatcher = await broker.open()

    await asyncio.gather(*(dispatcher.publish_to_nodes({"node-a": body}) for body in numbered(50)))

    await eventually(lambda: len(inbox.bodies) >= 50)
    assert inbox.bodies == numbered(50)


async def test_node_messages_reach_only_that_node(broker: Broker) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    await (await broker.open()).consume_node("node-a", inbox_a)
    await (await broker.open()).consume_node("node-b", inbox_b)
    dispatcher = await broker.open()

    await dispatcher.publish_to_nodes({"node-a": b"for-a", "node-b": b"for-b"})
    await dispatcher.publish_to_nodes({"node-b": b"for-b-again"})

    await eventually(lambda: len(inbox_a.bodies) >= 1 and len(inbox_b.bodies) >= 2)
    await asyncio.sleep(QUIET_S)
    assert inbox_a.bodies == [b"for-a"]
    assert inbox_b.bodies == [b"for-b", b"for-b-again"]


async def test_node_messages_reach_the_node_in_order(broker: Broker) -> None:
    inbox = Inbox()
    await (await broker.open()).consume_node("node-a", inbox)
    dispatcher = await broker.open()

    for body in numbered(50):
        await dispatcher.publish_to_nodes({"node-a": body})

    await eventually(lambda: len(inbox.bodies) >= 50)
    assert inbox.bodies == numbered(50)


async def test_publish_to_a_node_without_queue_is_dropped_quietly(broker: Broker) -> None:
    dispatcher = await broker.open()

    await dispatcher.publish_to_nodes({"node-gone": b"lost"})

    inbox = Inbox()
    await (await broker.open()).consume_node("node-gone", inbox)
    await dispatcher.publish_to_nodes({"node-gone": b"after"})
    await eventually(lambda: len(inbox.bodies) >= 1)
    await asyncio.sleep(QUIET_S)
    assert inbox.bodies == [b"after"]


async def test_dispatch_published_before_a_consumer_exists_is_kept(broker: Broker) -> None:
    publisher = await broker.open()
    for body in numbered(3):
        await publisher.publish_dispatch(body)

    inbox = Inbox()
    await (await broker.open()).consume_dispatch(batches(inbox))

    await eventually(lambda: len(inbox.bodies) >= 3)
    assert inbox.bodies == numbered(3)


async def test_stop_consuming_stops_delivery(broker: Broker) -> None:
    bus = await broker.open()
    stopped = Inbox()
    await bus.consume_dispatch(batches(stopped))
    await bus.publish_dispatch(b"before")
    await eventually(lambda: len(stopped.bodies) >= 1)

    await bus.stop_consuming()
    await bus.publish_dispatch(b"after")
    await asyncio.sleep(QUIET_S)

    assert stopped.bodies == [b"before"]
    resumed = Inbox()
    await bus.consume_dispatch(batches(resumed))
    await eventually(lambda: len(resumed.bodies) >= 1)
    assert resumed.bodies == [b"after"]


async def test_stop_consuming_lets_the_handler_in_flight_finish(broker: Broker) -> None:
    bus = await broker.open()
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bytes] = []

    async def slow(body: bytes) -> None:
        started.set()
        await release.wait()
        finished.append(body)

    await bus.consume_dispatch(batches(slow))
    await bus.publish_dispatch(b"in-flight")
    await asyncio.wait_for(started.wait(), WAIT_S)

    stopping = asyncio.create_task(bus.stop_consuming())
    await asyncio.sleep(0.1)
    release.set()
    await asyncio.wait_for(stopping, WAIT_S)

    assert finished == [b"in-flight"]
    # It was acknowledged: a new consumer gets only what comes next.
    inbox = Inbox()
    await bus.consume_dispatch(batches(inbox))
    await bus.publish_dispatch(b"next")
    await eventually(lambda: len(inbox.bodies) >= 1)
    await asyncio.sleep(QUIET_S)
    assert inbox.bodies == [b"next"]


async def test_consuming_reports_live_consumers(broker: Broker) -> None:
    bus = await broker.open()
    assert not bus.consuming()

    await bus.consume_dispatch(batches(Inbox()))
    await bus.consume_node("node-a", Inbox())
    assert bus.consuming()

    await bus.stop_consuming()
    assert not bus.consuming()


async def test_a_lost_subscription_comes_back_by_itself_and_says_so(broker: Broker) -> None:
    bus = await broker.open()
    changes, inbox = Changes(), Inbox()
    await bus.consume_node("node-a", inbox, on_change=changes)
    assert bus.consuming()

    await broker.lose_subscriptions(bus)

    await eventually(lambda: changes.seen == [False, True])
    assert bus.consuming()
    await bus.publish_to_nodes({"node-a": b"after"})
    await eventually(lambda: inbox.bodies == [b"after"])


async def test_every_kind_of_consumer_comes_back_after_a_loss(broker: Broker) -> None:
    bus = await broker.open()
    changes = {name: Changes() for name in ("dispatch", "receipts", "node", "events")}
    dispatched, receipts, delivered, events = Inbox(), Inbox(), Inbox(), Inbox()
    await bus.consume_dispatch(batches(dispatched), on_change=changes["dispatch"])
    await bus.consume_receipts(receipts, on_change=changes["receipts"])
    await bus.consume_node("node-a", delivered, on_change=changes["node"])
    await bus.consume_events("watch", ["#"], events, on_change=changes["events"])

    await broker.lose_subscriptions(bus)

    await eventually(lambda: all(change.seen == [False, True] for change in changes.values()))
    assert bus.consuming()
    await bus.publish_dispatch(b"d")
    await bus.publish_receipts(b"r")
    await bus.publish_to_nodes({"node-a": b"n"})
    await bus.publish_event("app_1.user.online", b"e")
    await eventually(
        lambda: (
            (dispatched.bodies, receipts.bodies, delivered.bodies, events.bodies) == ([b"d"], [b"r"], [b"n"], [b"e"])
        )
    )


async def test_stopping_and_consuming_again_never_subscribes_twice(broker: Broker) -> None:
    """The push node's own recovery (stop_consuming, then consume_node) keeps working."""
    bus = await broker.open()
    inbox = Inbox()
    await bus.consume_node("node-a", inbox)
    await broker.lose_subscriptions(bus)

    await bus.stop_consuming()
    await bus.consume_node("node-a", inbox)
    assert bus.consuming()

    for body in numbered(10):
        await bus.publish_to_nodes({"node-a": body})
    await eventually(lambda: len(inbox.bodies) >= 10)
    await asyncio.sleep(QUIET_S)
    assert inbox.bodies == numbered(10)


async def test_consuming_reports_live_consumers_only(broker: Broker) -> None:
    bus = await broker.open()
    assert not bus.consuming()
    await bus.consume_events("webhooks", ["#"], Inbox())
    assert bus.consuming()

    await bus.stop_consuming()
    assert not bus.consuming()


async def test_a_closed_bus_refuses_to_publish(broker: Broker) -> None:
    bus = await broker.open()
    await bus.close()

    with pytest.raises(Unavailable):
        await bus.publish_dispatch(b"late")


# Events ----------------------------------------------------------------------------------


async def test_an_event_reaches_a_matching_group_and_no_other(broker: Broker) -> None:
    matching, other = Inbox(), Inbox()
    await (await broker.open()).consume_events("webhooks", ["app_1.user.*"], matching)
    await (await broker.open()).consume_events("audit", ["app_2.#"], other)
    publisher = await broker.open()

    await publisher.publish_event("app_1.user.online", b"online")

    await eventually(lambda: len(matching.bodies) >= 1)
    await asyncio.sleep(QUIET_S)
    assert matching.bodies == [b"online"]
    assert other.bodies == []


async def test_every_group_gets_its_own_copy(broker: Broker) -> None:
    webhooks, audit = Inbox(), Inbox()
    await (await broker.open()).consume_events("webhooks", ["#"], webhooks)
    await (await broker.open()).consume_events("audit", ["app_1.#"], audit)
    publisher = await broker.open()

    for body in numbered(10):
        await publisher.publish_event("app_1.group.joined", body)

    await eventually(lambda: len(webhooks.bodies) >= 10 and len(audit.bodies) >= 10)
    assert webhooks.bodies == numbered(10)
    assert audit.bodies == numbered(10)


async def test_consumers_of_one_group_share_its_events(broker: Broker) -> None:
    first, second = Inbox(delay_s=0.005), Inbox(delay_s=0.005)
    await (await broker.open()).consume_events("webhooks", ["*.user.*"], first)
    await (await broker.open()).consume_events("webhooks", ["*.user.*"], second)
    publisher = await broker.open()

    for body in numbered(40):
        await publisher.publish_event("app_1.user.offline", body)

    await eventually(lambda: len(first.bodies) + len(second.bodies) >= 40)
    await asyncio.sleep(QUIET_S)
    assert sorted(first.bodies + second.bodies) == numbered(40)
    assert first.bodies and second.bodies


async def test_star_is_one_word_and_hash_is_any_number(broker: Broker) -> None:
    star, hash_tail, one_word, every = Inbox(), Inbox(), Inbox(), Inbox()
    bus = await broker.open()
    await bus.consume_events("presence", ["*.user.*"], star)
    await bus.consume_events("audit", ["app_1.#"], hash_tail)
    await bus.consume_events("webhooks", ["app_1.*"], one_word)
    await bus.consume_events("everything", ["#"], every)
    keys = ["app_1.user.online", "app_2.user.offline", "app_1.group.joined", "app_1", "app_2.message.acked"]

    for key in keys:
        await bus.publish_event(key, key.encode())

    await eventually(lambda: len(every.bodies) >= len(keys))
    await asyncio.sleep(QUIET_S)
    assert every.bodies == [key.encode() for key in keys]
    assert star.bodies == [b"app_1.user.online", b"app_2.user.offline"]
    assert hash_tail.bodies == [b"app_1.user.online", b"app_1.group.joined", b"app_1"]
    assert one_word.bodies == []


async def test_events_published_together_each_keep_their_own_routing_key(broker: Broker) -> None:
    presence, everything = Inbox(), Inbox()
    bus = await broker.open()
    await bus.consume_events("presence", ["*.user.*"], presence)
    await bus.consume_events("everything", ["#"], everything)
    keys = ["app_1.user.online", "app_1.group.joined", "app_2.user.offline"]

    await bus.publish_events([(key, key.encode()) for key in keys])

    await eventually(lambda: len(everything.bodies) >= len(keys))
    await asyncio.sleep(QUIET_S)
    assert everything.bodies == [key.encode() for key in keys]
    assert presence.bodies == [b"app_1.user.online", b"app_2.user.offline"]


async def test_each_pattern_of_a_group_is_bound(broker: Broker) -> None:
    inbox = Inbox()
    bus = await broker.open()
    await bus.consume_events("webhooks", ["*.user.online", "app_2.#"], inbox)

    for key in ["app_1.user.online", "app_1.user.offline", "app_2.group.left"]:
        await bus.publish_event(key, key.encode())

    await eventually(lambda: len(inbox.bodies) >= 2)
    await asyncio.sleep(QUIET_S)
    assert inbox.bodies == [b"app_1.user.online", b"app_2.group.left"]


async def test_events_before_a_group_exists_are_dropped_and_after_it_they_wait(broker: Broker) -> None:
    bus = await broker.open()
    await bus.publish_event("app_1.user.online", b"nobody-bound")
    first = Inbox()
    await bus.consume_events("webhooks", ["app_1.#"], first)
    await bus.publish_event("app_1.user.online", b"seen")
    await eventually(lambda: len(first.bodies) >= 1)

    await bus.stop_consuming()
    await bus.publish_event("app_1.user.offline", b"waits")
    await asyncio.sleep(QUIET_S)
    later = Inbox()
    await bus.consume_events("webhooks", ["app_1.#"], later)

    await eventually(lambda: len(later.bodies) >= 1)
    await asyncio.sleep(QUIET_S)
    assert first.bodies == [b"seen"]
    assert later.bodies == [b"waits"]


async def test_a_failing_event_handler_gets_the_event_again(broker: Broker) -> None:
    bus = await broker.open()
    attempts: list[bytes] = []

    async def fails_once(body: bytes) -> None:
        attempts.append(body)
        if len(attempts) == 1:
            raise RuntimeError("the store is down")

    await bus.consume_events("webhooks", ["#"], fails_once)
    await bus.publish_event("app_1.user.online", b"e")

    await eventually(lambda: len(attempts) >= 2)
    assert attempts == [b"e", b"e"]


async def test_a_closed_bus_refuses_to_publish_events(broker: Broker) -> None:
    bus = await broker.open()
    await bus.close()

    with pytest.raises(Unavailable):
        await bus.publish_event("app_1.user.online", b"late")


# In process only -------------------------------------------------------------------------


async def test_publishes_waiting_for_room_in_a_full_node_queue_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "NODE_QUEUE_MAX", 1)
    bus = MemoryBus()
    await bus.start()
    inbox = Inbox()
    release = asyncio.Event()

    async def blocked_at_first(body: bytes) -> None:
        await release.wait()
        await inbox(body)

    try:
        await bus.consume_node("node-a", blocked_at_first)
        bodies = numbered(7)
        await bus.publish_to_nodes({"node-a": bodies[0]})  # taken by the blocked handler
        await bus.publish_to_nodes({"node-a": bodies[1]})  # fills the queue
        waiting = [asyncio.ensure_future(bus.publish_to_nodes({"node-a": body})) for body in bodies[2:]]

        release.set()
        await asyncio.wait_for(asyncio.gather(*waiting), WAIT_S)

        await eventually(lambda: len(inbox.bodies) >= 7)
        assert inbox.bodies == bodies
    finally:
        await bus.close()


# RabbitMQ only ---------------------------------------------------------------------------


async def test_a_consumer_whose_queue_was_deleted_subscribes_again(namespace: str, amqp_url: str) -> None:
    broker = Broker("amqp", namespace, amqp_url)
    try:
        bus = await broker.open()
        changes, inbox = Changes(), Inbox()
        await bus.consume_node("node-a", inbox, on_change=changes)

        await broker.delete_queue(broker.names.node_queue("node-a"))

        await eventually(lambda: changes.seen == [False, True])
        await bus.publish_to_nodes({"node-a": b"after"})
        await eventually(lambda: inbox.bodies == [b"after"])
        assert bus.consuming()
    finally:
        await broker.close_all()


async def test_a_dispatch_consumer_whose_queue_was_deleted_declares_it_again(namespace: str, amqp_url: str) -> None:
    broker = Broker("amqp", namespace, amqp_url)
    try:
        bus = await broker.open()
        changes, inbox = Changes(), Inbox()
        await bus.consume_dispatch(batches(inbox), on_change=changes)

        await broker.delete_queue(broker.names.work_queues("quorum").dispatch)

        await eventually(lambda: changes.seen == [False, True])
        await _publish_when_possible(bus, b"after")
        await eventually(lambda: inbox.bodies == [b"after"])
    finally:
        await broker.close_all()


async def test_publish_to_an_unreachable_broker_is_unavailable(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bus gives up after CONNECT_TIMEOUT_S (10 s) of connection rounds; 1 s of them shows the same.
    monkeypatch.setattr(amqp_bus, "CONNECT_TIMEOUT_S", 1.0)
    bus = AmqpBus(f"amqp://guest:guest@127.0.0.1:{free_port()}/", Names(namespace))

    with pytest.raises(Unavailable):
        await asyncio.wait_for(bus.start(), WAIT_S)
    await bus.close()


async def test_dispatch_without_its_queue_is_unavailable(namespace: str, amqp_url: str) -> None:
    names = Names(namespace)
    bus = AmqpBus(amqp_url, names)
    await bus.start()
    try:
        await _delete_queue(amqp_url, names.work_queues("quorum").dispatch)

        with pytest.raises(Unavailable):
            await asyncio.wait_for(bus.publish_dispatch(b"unroutable"), WAIT_S)
    finally:
        await bus.close()


async def test_closing_a_node_bus_deletes_its_queue(namespace: str, amqp_url: str) -> None:
    names = Names(namespace)
    bus = AmqpBus(amqp_url, names)
    await bus.start()
    await bus.consume_node("node-a", Inbox())

    await bus.close()

    assert not await _queue_exists(amqp_url, names.node_queue("node-a"))


async def test_a_bus_recovers_after_its_connection_drops(namespace: str, amqp_url: str) -> None:
    broker_url = urlsplit(amqp_url)
    proxy = TcpProxy(free_port(), upstream=broker_url.port or 5672)
    await proxy.start()
    credentials = f"{broker_url.username}:{broker_url.password}@" if broker_url.username else ""
    url = f"amqp://{credentials}127.0.0.1:{proxy.port}{broker_url.path or '/'}?reconnect_interval=0.2"
    bus = AmqpBus(url, Names(namespace))
    await bus.start()
    try:
        dispatched, delivered, changes = Inbox(), Inbox(), Changes()
        await bus.consume_dispatch(batches(dispatched))
        await bus.consume_node("node-a", delivered, on_change=changes)

        await proxy.cut()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(bus.publish_dispatch(b"during"), WAIT_S)
        await eventually(lambda: not bus.consuming())
        assert changes.seen == [False]
        await proxy.start()

        await asyncio.wait_for(_publish_when_possible(bus, b"after"), WAIT_S)
        await eventually(lambda: b"after" in dispatched.bodies)
        await eventually(lambda: changes.seen == [False, True])
        await bus.publish_to_nodes({"node-a": b"to-node"})
        await eventually(lambda: delivered.bodies == [b"to-node"])
        assert bus.consuming()
    finally:
        await bus.close()
        await proxy.cut()


async def test_a_bus_given_several_nodes_uses_the_first_that_answers(namespace: str, amqp_url: str) -> None:
    nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    bus = AmqpBus(f"{nobody},{amqp_url}", Names(namespace))
    await bus.start()
    try:
        inbox = Inbox()
        await bus.consume_dispatch(batches(inbox))
        await bus.publish_dispatch(b"through-the-second")
        await eventually(lambda: inbox.bodies == [b"through-the-second"])
    finally:
        await bus.close()


async def test_a_bus_moves_to_the_next_node_when_its_node_goes(namespace: str, amqp_url: str) -> None:
    broker_url = urlsplit(amqp_url)
    proxy = TcpProxy(free_port(), upstream=broker_url.port or 5672)
    await proxy.start()
    credentials = f"{broker_url.username}:{broker_url.password}@" if broker_url.username else ""
    first = f"amqp://{credentials}127.0.0.1:{proxy.port}{broker_url.path or '/'}"
    bus = AmqpBus([first, amqp_url], Names(namespace))
    await bus.start()
    try:
        inbox, changes = Inbox(), Changes()
        await bus.consume_dispatch(batches(inbox), on_change=changes)

        await proxy.cut()  # the first node is gone, and stays gone

        await eventually(lambda: changes.seen == [False, True])
        await asyncio.wait_for(_publish_when_possible(bus, b"after"), WAIT_S)
        await eventually(lambda: inbox.bodies == [b"after"])
    finally:
        await bus.close()
        await proxy.cut()


async def _publish_when_possible(bus: Bus, body: bytes) -> None:
    while True:
        try:
            await bus.publish_dispatch(body)
            return
        except Unavailable:
            await asyncio.sleep(0.1)


async def _delete_queue(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def _queue_exists(amqp_url: str, name: str) -> bool:
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return False
        return True


async def test_queue_depths_asked_again_and_again_open_no_more_channels(
    namespace: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every channel aio-pika opens and closes leaves ~4.4 KB on its connection (issue 18):
    # the depths a push node reports at each heartbeat, dispatch every 5 s, must not
    # open one per call.
    opened = _count_depth_channels(monkeypatch)
    bus = AmqpBus(amqp_url, Names(namespace))
    await bus.start()
    try:
        await bus.consume_node("node-a", Inbox())
        await asyncio.wait_for(bus.queue_depths(["node-a"]), WAIT_S)  # misses legacy queues once
        first = len(opened)
        for _ in range(20):
            depths = await asyncio.wait_for(bus.queue_depths(["node-a"]), WAIT_S)
            assert "node:node-a" in depths
    finally:
        await bus.close()

    assert len(opened) == first


async def test_a_node_asking_only_its_own_queue_depth_opens_no_channel_for_missing_shared_queues(
    namespace: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A push node reports its own queue's depth at every heartbeat; asking the shared
    # queues too meant a passive declare of each missing one (legacy queues, the dead
    # letters) every recheck, and so a channel each time (issue 18).
    opened = _count_depth_channels(monkeypatch)
    monkeypatch.setattr(amqp_depths, "MISSING_RECHECK_S", 0.0)
    monkeypatch.setattr(amqp_depths, "LEGACY_ABSENT_S", 0.0)
    bus = AmqpBus(amqp_url, Names(namespace))
    await bus.start()
    try:
        await bus.consume_node("node-a", Inbox())
        for _ in range(10):
            depths = await asyncio.wait_for(bus.queue_depths(["node-a"], shared=False), WAIT_S)
            assert list(depths) == ["node:node-a"]
    finally:
        await bus.close()

    assert len(opened) == 1


def _count_depth_channels(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The channels the queue-depth reader opens from now on."""
    opened: list[object] = []
    real_open = amqp_depths.open_channel

    async def counted(connection: aio_pika.abc.AbstractConnection, **options: object) -> object:
        channel = await real_open(connection, **options)
        opened.append(channel)
        return channel

    monkeypatch.setattr(amqp_depths, "open_channel", counted)
    return opened
