"""collect's MessageService called directly: sends, the idempotent send, batches, status
and history, on the SQLite store and the memory bus and directory, without HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.base import Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, TooManyRequests, Unavailable
from herald.core.model import App, AppConfig, AppLimits, Message
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.messaging.appconfig import AppConfigs
from herald.services.collect.groupcommit import GroupCommit
from herald.services.collect.message_models import SendMessage
from herald.services.collect.message_service import MessageService
from herald.services.collect.online import OnlineLookups
from herald.services.collect.quotas import Quotas

APP = "app_00000000000000a1"


class FlakyStore(SqliteStore):
    """The standalone store; ``refuse_inserts`` makes storing messages fail."""

    refuse_inserts = False

    async def insert_messages(self, messages: Sequence[Message]) -> None:
        if self.refuse_inserts:
            raise Unavailable("store down", code="store_unavailable")
        await super().insert_messages(messages)


@pytest.fixture
async def store() -> AsyncIterator[FlakyStore]:
    impl = FlakyStore(":memory:")
    await impl.start()
    await impl.insert_app(App(APP, "shop", time.time()))
    try:
        yield impl
    finally:
        await impl.close()


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory()


@pytest.fixture
async def service(store: FlakyStore, directory: MemoryDirectory) -> MessageService:
    bus = MemoryBus()
    await bus.start()
    settings = Settings.from_env("standalone", {"HERALD_ADMIN_TOKEN": "a" * 40, "HERALD_SERVICE_TOKEN": "s" * 40})
    quotas = Quotas(settings, AppConfigs(store), directory)
    return MessageService(store, GroupCommit(Acceptor(store, bus)), OnlineLookups(directory), quotas)


def message(**fields: Any) -> SendMessage:
    return SendMessage.model_validate({"to": {"users": ["7"]}, "event": "order.shipped", "data": {"n": 1}, **fields})


async def limit(store: SqliteStore, **limits: Any) -> None:
    await store.set_app_config(APP, AppConfig(limits=AppLimits(**limits)))


async def test_a_send_to_users_accepts_one_message_per_user_channel(service: MessageService) -> None:
    accepted = await service.send(APP, message(to={"users": ["7", "8", "7"]}))
    assert [(a["channel"], a["offset"]) for a in accepted] == [("user:7", 1), ("user:8", 1)]


async def test_a_send_says_which_recipients_are_online(service: MessageService, directory: MemoryDirectory) -> None:
    await directory.add_connections("node-a", [Presence(APP, "7", "c1")], 30)
    accepted = await service.send(APP, message(to={"users": ["7", "8"]}))
    assert [a["online"] for a in accepted] == [True, False]


async def test_a_group_send_does_not_say_whether_anyone_is_online(service: MessageService) -> None:
    accepted = await service.send(APP, message(to={"group": "ops"}))
    assert [(a["channel"], a["online"]) for a in accepted] == [("group:ops", None)]


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_result_and_stores_nothing_more(
    service: MessageService, store: FlakyStore
) -> None:
    first = await service.send(APP, message(idempotency_key="k1"))
    again = await service.send(APP, message(idempotency_key="k1"))
    assert again == first
    assert len(await store.read_channel(APP, "user:7", 0, 10, time.time())) == 1


async def test_a_key_whose_first_request_is_still_running_is_a_conflict(
    service: MessageService, store: FlakyStore
) -> None:
    now = time.time()
    assert await store.reserve_idempotency(APP, "k1", now + 60, now) is None  # the first request, under way
    with pytest.raises(Conflict) as raised:
        await service.send(APP, message(idempotency_key="k1"))
    assert raised.value.code == "in_progress"


async def test_a_failed_send_frees_its_idempotency_key_for_the_retry(
    service: MessageService, store: FlakyStore
) -> None:
    store.refuse_inserts = True
    with pytest.raises(Unavailable):
        await service.send(APP, message(idempotency_key="k1"))
    store.refuse_inserts = False
    await service.send(APP, message(idempotency_key="k1"))
    assert len(await store.read_channel(APP, "user:7", 0, 10, time.time())) == 1


async def test_a_send_over_the_apps_rate_is_refused_with_when_to_retry(
    service: MessageService, store: FlakyStore
) -> None:
    await limit(store, messages_per_s=1, burst=1)
    await service.send(APP, message())
    with pytest.raises(TooManyRequests) as raised:
        await service.send(APP, message())
    assert raised.value.retry_after_s > 0


async def test_a_batch_answers_each_item_in_order_an_invalid_one_with_its_error(service: MessageService) -> None:
    items = [
        {"to": {"users": ["1"]}, "event": "e"},
        {"to": {"users": ["2"]}},  # no event
        {"to": {"group": "bad name"}, "event": "e"},
    ]
    results = await service.send_batch(APP, items)
    assert results[0]["messages"][0]["channel"] == "user:1"
    assert results[1]["error"]["code"] == "invalid_request"
    assert results[2]["error"]["code"] == "invalid_group"


async def test_a_batch_item_with_a_used_idempotency_key_gets_the_first_result(service: MessageService) -> None:
    first = await service.send(APP, message(idempotency_key="k1"))
    results = await service.send_batch(APP, [message(idempotency_key="k1").model_dump(exclude_none=True)])
    assert results == [{"messages": first}]


async def test_a_batch_of_more_items_than_the_apps_max_batch_is_too_large(
    service: MessageService, store: FlakyStore
) -> None:
    await limit(store, max_batch=2)
    with pytest.raises(PayloadTooLarge) as raised:
        await service.send_batch(APP, [{"to": {"users": ["7"]}, "event": "e"}] * 3)
    assert raised.value.code == "batch_too_large"


async def test_a_batch_addressing_more_than_ten_times_max_batch_recipients_is_too_large(
    service: MessageService, store: FlakyStore
) -> None:
    await limit(store, max_batch=11)
    users = [str(n) for n in range(11)]
    with pytest.raises(PayloadTooLarge) as raised:
        await service.send_batch(APP, [{"to": {"users": users}, "event": "e"}] * 11)
    assert raised.value.code == "batch_too_large"


async def test_a_sent_message_has_the_accepted_status_and_no_deliveries(service: MessageService) -> None:
    [accepted] = await service.send(APP, message())
    status = await service.status(APP, accepted["id"])
    assert (status["status"], status["deliveries"], status["data"]) == ("accepted", [], {"n": 1})


async def test_the_status_of_an_unknown_message_is_not_found(service: MessageService) -> None:
    with pytest.raises(NotFound) as raised:
        await service.status(APP, "m_unknown")
    assert raised.value.code == "unknown_message"


async def test_history_reads_the_messages_after_since_and_says_where_to_go_on(service: MessageService) -> None:
    for _ in range(3):
        await service.send(APP, message())
    page = await service.history(APP, "user:7", 1, 10)
    assert ([m["offset"] for m in page["messages"]], page["next"]) == ([2, 3], 3)


async def test_history_past_the_end_keeps_since_as_next(service: MessageService) -> None:
    assert await service.history(APP, "user:7", 5, 10) == {"channel": "user:7", "messages": [], "next": 5}


async def test_history_of_a_malformed_channel_is_a_bad_request(service: MessageService) -> None:
    with pytest.raises(BadRequest) as raised:
        await service.history(APP, "nowhere", 0, 10)
    assert raised.value.code == "invalid_channel"
