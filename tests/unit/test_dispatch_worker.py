"""dispatch's worker on a batch of bus bodies, with recording stand-ins for bus, directory and store."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest

from herald.adapters.bus.base import Bus
from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core import codec
from herald.core.errors import Unavailable
from herald.services.dispatch.status_writer import StatusRecorder
from herald.services.dispatch.worker import DispatchWorker, UnreadableBody


def _msg(user: str, offset: int, app: str = "a1", data: Any = None) -> dict[str, Any]:
    return {"id": f"{user}-{offset}", "app": app, "channel": f"user:{user}", "offset": offset, "data": data}


def _body(*messages: dict[str, Any]) -> bytes:
    return codec.encode_batch(messages)


class Routes:
    """A directory that knows which node each user is on, and counts its lookups."""

    def __init__(self, nodes: Mapping[str, str]) -> None:
        self._nodes = nodes
        self.lookups: list[list[tuple[str, str]]] = []

    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        self.lookups.append(list(recipients))
        return {(app, user): {self._nodes[user]} for app, user in recipients if user in self._nodes}

    async def nodes_for_channels(self, channels: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        return {}


class Publishes(MemoryBus):
    """Records node publishes; while ``confirming`` is clear they wait for their confirms."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, bytes]] = []
        self.confirming = asyncio.Event()
        self.confirming.set()
        self.refuse = False

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        self.sent.append(dict(bodies))
        await self.confirming.wait()
        if self.refuse:
            raise Unavailable("RabbitMQ did not confirm")


class Statuses:
    """A store that records status writes; while ``writing`` is clear a write waits."""

    def __init__(self, outage: bool = False) -> None:
        self.writes: list[tuple[list[str], str]] = []
        self.writing = asyncio.Event()
        self.writing.set()
        self.outage = outage

    async def advance_status(self, message_ids: Sequence[str], status: str) -> None:
        self.writes.append((list(message_ids), status))
        await self.writing.wait()
        if self.outage:
            raise Unavailable("MongoDB down")


def _worker(bus: MemoryBus, routes: Routes, store: Statuses) -> DispatchWorker:
    return DispatchWorker(cast(Bus, bus), cast(Directory, routes), cast(Store, store))


def _offsets(body: bytes) -> list[tuple[str, int]]:
    return [(m["channel"], m["offset"]) for m in codec.decode_batch(body)]


async def _still_pending(task: asyncio.Future[None]) -> bool:
    for _ in range(5):
        await asyncio.sleep(0)
    return not task.done()


async def test_a_batch_takes_one_lookup_and_one_body_per_node() -> None:
    bus, routes, store = Publishes(), Routes({"7": "n1", "8": "n2"}), Statuses()
    worker = _worker(bus, routes, store)

    await (await worker.handle([_body(_msg("7", 1)), _body(_msg("8", 1)), _body(_msg("7", 2))]))

    assert routes.lookups == [[("a1", "7"), ("a1", "8")]]
    [sent] = bus.sent
    assert {node: _offsets(body) for node, body in sent.items()} == {
        "n1": [("user:7", 1), ("user:7", 2)],
        "n2": [("user:8", 1)],
    }


async def test_a_channels_offsets_leave_in_ascending_order_whatever_order_they_came_in() -> None:
    bus = Publishes()
    worker = _worker(bus, Routes({"7": "n1"}), Statuses())

    await (await worker.handle([_body(_msg("7", 3)), _body(_msg("7", 1), _msg("7", 2))]))

    assert _offsets(bus.sent[0]["n1"]) == [("user:7", 1), ("user:7", 2), ("user:7", 3)]


async def test_a_batch_is_recorded_dispatched_in_one_store_write() -> None:
    store = Statuses()
    worker = _worker(Publishes(), Routes({"7": "n1"}), store)

    await (await worker.handle([_body(_msg("7", 1)), _body(_msg("9", 1)), _body(_msg("7", 2))]))
    await worker.close()

    assert store.writes == [(["7-1", "9-1", "7-2"], "dispatched")]


async def test_a_batch_settles_only_after_its_node_publishes_are_confirmed() -> None:
    bus = Publishes()
    bus.confirming.clear()
    worker = _worker(bus, Routes({"7": "n1"}), Statuses())

    settling = asyncio.ensure_future(await worker.handle([_body(_msg("7", 1))]))

    assert await _still_pending(settling)
    assert bus.sent
    bus.confirming.set()
    await settling


async def test_a_batch_settles_without_waiting_for_its_status_write() -> None:
    store = Statuses()
    store.writing.clear()
    worker = _worker(Publishes(), Routes({"7": "n1"}), store)

    await (await worker.handle([_body(_msg("7", 1))]))

    store.writing.set()
    await worker.close()
    assert store.writes == [(["7-1"], "dispatched")]


async def test_a_refused_publish_fails_the_batch() -> None:
    bus = Publishes()
    bus.refuse = True
    worker = _worker(bus, Routes({"7": "n1"}), Statuses())

    settling = await worker.handle([_body(_msg("7", 1))])

    with pytest.raises(Unavailable):
        await settling


async def test_the_next_batch_is_published_while_the_previous_awaits_its_confirms() -> None:
    bus = Publishes()
    bus.confirming.clear()
    worker = _worker(bus, Routes({"7": "n1"}), Statuses())

    first = asyncio.ensure_future(await worker.handle([_body(_msg("7", 1))]))
    second = asyncio.ensure_future(await worker.handle([_body(_msg("7", 2))]))

    await _still_pending(second)
    assert [_offsets(sent["n1"]) for sent in bus.sent] == [[("user:7", 1)], [("user:7", 2)]]
    bus.confirming.set()
    await asyncio.gather(first, second)


@pytest.mark.parametrize("unreadable", [b"not json", _body({**_msg("7", 2), "channel": "nowhere"})])
async def test_an_unreadable_body_fails_its_batch_so_the_bus_can_park_it(unreadable: bytes) -> None:
    bus, store = Publishes(), Statuses()
    worker = _worker(bus, Routes({"7": "n1"}), store)

    with pytest.raises(UnreadableBody):
        await worker.handle([unreadable, _body(_msg("7", 1))])
    await (await worker.handle([_body(_msg("7", 1))]))  # the bus then tries the bodies one by one
    await worker.close()

    assert [_offsets(sent["n1"]) for sent in bus.sent] == [[("user:7", 1)]]
    assert store.writes == [(["7-1"], "dispatched")]


async def test_a_node_body_too_large_for_one_publish_goes_in_parts_in_order() -> None:
    bus = Publishes()
    worker = _worker(bus, Routes({"7": "n1"}), Statuses())
    half = "x" * (codec.MAX_BATCH_BYTES // 2 + 1)

    await (await worker.handle([_body(_msg("7", 1, data=half)), _body(_msg("7", 2, data=half))]))

    assert [_offsets(sent["n1"]) for sent in bus.sent] == [[("user:7", 1)], [("user:7", 2)]]


async def test_statuses_recorded_while_the_recorder_lingers_share_its_first_write() -> None:
    store = Statuses()
    recorder = StatusRecorder(cast(Store, store))

    for n in (1, 2, 3):
        await recorder.record([f"m{n}"])
    await recorder.flush()

    assert store.writes == [(["m1", "m2", "m3"], "dispatched")]


async def test_statuses_arriving_during_a_write_share_the_next_write() -> None:
    store = Statuses()
    store.writing.clear()
    recorder = StatusRecorder(cast(Store, store), linger_s=0)

    await recorder.record(["m1"])
    while not store.writes:
        await asyncio.sleep(0)
    await recorder.record(["m2"])
    await recorder.record(["m3"])
    store.writing.set()
    await recorder.flush()

    assert store.writes == [(["m1"], "dispatched"), (["m2", "m3"], "dispatched")]


async def test_recording_waits_for_the_store_once_too_many_ids_are_queued() -> None:
    store = Statuses()
    store.writing.clear()
    recorder = StatusRecorder(cast(Store, store), linger_s=0, pending_max=2)
    await recorder.record(["m1"])
    while not store.writes:
        await asyncio.sleep(0)
    await recorder.record(["m2", "m3"])

    blocked = asyncio.ensure_future(recorder.record(["m4"]))

    assert await _still_pending(blocked)
    store.writing.set()
    await blocked
    await recorder.flush()
    assert [ids for ids, _ in store.writes] == [["m1"], ["m2", "m3"], ["m4"]]


async def test_a_store_outage_loses_only_the_statuses() -> None:
    store = Statuses(outage=True)
    worker = _worker(Publishes(), Routes({"7": "n1"}), store)

    await (await worker.handle([_body(_msg("7", 1))]))
    await worker.close()

    assert store.writes == [(["7-1"], "dispatched")]
