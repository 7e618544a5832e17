"""The store's contract: one set of behaviours that MongoDB and SQLite both keep.

Every test runs against both implementations. Times are passed in explicitly (``now``),
so expiry is checked without sleeping; "live" times are also in the real future, because
MongoDB's TTL (and the stand-in's expiry on read) goes by the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from herald.adapters.store.base import CLAIM_TIMEOUT_S, Store
from herald.adapters.store.mongo import MongoStore
from herald.adapters.store.sqlite import SqliteStore
from herald.core.errors import Conflict, Unavailable
from herald.core.model import App, AppConfig, AppLimits, Delivery, Message, TokenRecord
from tests.support.servers import free_port

APP = "app_00000000000000a1"
OTHER_APP = "app_00000000000000b2"
HOUR = 3600.0


@pytest.fixture(params=["sqlite", "mongo"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Which implementation a test runs against.

    Synchronous so it can ask for the (async) MongoDB fixtures only when MongoDB is in
    play: pytest-asyncio cannot resolve an async fixture from inside a running one.
    """
    if request.param == "mongo":
        url, database = request.getfixturevalue("mongo_url"), request.getfixturevalue("namespace")
        return lambda: MongoStore(url, database=database)
    return lambda: SqliteStore(str(tmp_path / "herald.db"))


@pytest.fixture
def now() -> float:
    """The test's wall-clock time, in whole seconds so it round-trips MongoDB's milliseconds exactly."""
    return float(int(time.time()))


@pytest.fixture
async def store(new_store: Callable[[], Store]) -> AsyncIterator[Store]:
    impl = new_store()
    await impl.start()
    try:
        yield impl
    finally:
        await impl.close()


def message(
    now: float,
    offset: int,
    *,
    channel: str = "user:ann",
    app_id: str = APP,
    message_id: str | None = None,
    expires_at: float | None = None,
    data: Any = ...,
) -> Message:
    return Message(
        id=message_id or f"{app_id}-{channel}-{offset}",
        app_id=app_id,
        channel=channel,
        offset=offset,
        event="order.shipped",
        data={"order": offset} if data is ... else data,
        ts=int(now * 1000) + offset,
        expires_at=now + HOUR if expires_at is None else expires_at,
    )


async def statuses(store: Store, now: float, *messages: Message) -> list[str]:
    found = [await store.get_message(m.app_id, m.id, now) for m in messages]
    return [m.status for m in found if m is not None]


# Offsets ---------------------------------------------------------------------


async def test_first_offset_of_a_channel_is_one(store: Store) -> None:
    assert await store.allocate_offsets(APP, {"user:ann": 1}) == {"user:ann": 1}


async def test_allocation_returns_the_last_offset_of_the_range(store: Store) -> None:
    assert await store.allocate_offsets(APP, {"user:ann": 3}) == {"user:ann": 3}
    assert await store.allocate_offsets(APP, {"user:ann": 2}) == {"user:ann": 5}


async def test_offset_ranges_of_concurrent_allocations_never_overlap(store: Store) -> None:
    counts = list(range(1, 21))
    results = await asyncio.gather(*(store.allocate_offsets(APP, {"group:ops": k}) for k in counts))
    owned = [
        offset
        for count, result in zip(counts, results, strict=True)
        for offset in range(result["group:ops"] - count + 1, result["group:ops"] + 1)
    ]
    assert sorted(owned) == list(range(1, sum(counts) + 1))


async def test_an_allocation_of_many_channels_continues_each_counter(store: Store) -> None:
    await store.allocate_offsets(APP, {"user:ann": 2})
    channels = {f"user:u{i}": i % 3 + 1 for i in range(40)}
    assert await store.allocate_offsets(APP, {"user:ann": 1, **channels}) == {"user:ann": 3, **channels}
    assert await store.allocate_offsets(APP, {"user:ann": 1, "user:u0": 1, "user:u1": 4}) == {
        "user:ann": 4,
        "user:u0": 2,
        "user:u1": 6,
    }


async def test_concurrent_allocations_of_many_shared_channels_never_overlap(store: Store) -> None:
    channels = [f"user:u{i}" for i in range(12)]
    requests = [{channel: k for channel in channels[k % 4 :]} for k in range(1, 11)]
    results = await asyncio.gather(*(store.allocate_offsets(APP, counts) for counts in requests))
    for channel in channels:
        owned = [
            offset
            for counts, result in zip(requests, results, strict=True)
            if channel in counts
            for offset in range(result[channel] - counts[channel] + 1, result[channel] + 1)
        ]
        assert sorted(owned) == list(range(1, len(owned) + 1)), channel


async def test_channels_have_independent_counters(store: Store) -> None:
    assert await store.allocate_offsets(APP, {"user:ann": 3, "user:bob": 2}) == {"user:ann": 3, "user:bob": 2}
    assert await store.allocate_offsets(APP, {"user:bob": 1}) == {"user:bob": 3}
    assert await store.allocate_offsets(APP, {"broadcast": 1}) == {"broadcast": 1}


async def test_apps_have_independent_counters(store: Store) -> None:
    await store.allocate_offsets(APP, {"user:ann": 7})
    assert await store.allocate_offsets(OTHER_APP, {"user:ann": 1}) == {"user:ann": 1}


async def test_channel_heads_are_the_last_allocated_offsets(store: Store) -> None:
    await store.allocate_offsets(APP, {"user:ann": 3, "group:ops": 2})
    await store.allocate_offsets(APP, {"group:ops": 4})
    assert await store.channel_heads(APP, ["user:ann", "group:ops"]) == {"user:ann": 3, "group:ops": 6}


async def test_channel_heads_of_never_written_channels_are_zero(store: Store) -> None:
    await store.allocate_offsets(APP, {"user:ann": 2})
    await store.allocate_offsets(OTHER_APP, {"broadcast": 5})
    heads = await store.channel_heads(APP, ["user:ann", "user:bob", "broadcast"])
    assert heads == {"user:ann": 2, "user:bob": 0, "broadcast": 0}


async def test_channel_heads_of_no_channels_are_empty(store: Store) -> None:
    assert await store.channel_heads(APP, []) == {}


async def test_channel_heads_cover_many_channels_at_once(store: Store) -> None:
    written = {f"user:u{i}": i + 1 for i in range(0, 1200, 2)}
    await store.allocate_offsets(APP, written)
    wanted = [f"user:u{i}" for i in range(1200)]
    assert await store.channel_heads(APP, wanted) == {channel: written.get(channel, 0) for channel in wanted}


# Messages --------------------------------------------------------------------


async def test_an_inserted_message_reads_back_unchanged(store: Store, now: float) -> None:
    original = message(now, 1)
    original.idempotency_key = "req-1"
    await store.insert_messages([original])
    assert await store.get_message(APP, original.id, now) == original
    assert await store.read_channel(APP, "user:ann", 0, 10, now) == [original]


async def test_read_channel_returns_offsets_after_position_in_order_up_to_limit(store: Store, now: float) -> None:
    await store.insert_messages([message(now, offset) for offset in (4, 1, 6, 2, 5, 3)])
    await store.insert_messages([message(now, offset, channel="user:bob") for offset in (1, 2, 3, 4)])

    assert [m.offset for m in await store.read_channel(APP, "user:ann", 2, 3, now)] == [3, 4, 5]
    assert [m.offset for m in await store.read_channel(APP, "user:ann", 5, 10, now)] == [6]
    assert await store.read_channel(APP, "user:ann", 6, 10, now) == []
    assert {m.channel for m in await store.read_channel(APP, "user:ann", 0, 100, now)} == {"user:ann"}


async def test_read_channel_with_a_limit_of_zero_returns_nothing(store: Store, now: float) -> None:
    await store.insert_messages([message(now, 1), message(now, 2)])
    assert await store.read_channel(APP, "user:ann", 0, 0, now) == []


async def test_expired_messages_are_neither_read_nor_found(store: Store, now: float) -> None:
    short = message(now, 1, expires_at=now + 60)
    long = message(now, 2, expires_at=now + 600)
    gone = message(now, 3, expires_at=now - 60)  # already past by the wall clock too
    await store.insert_messages([short, long, gone])

    assert [m.offset for m in await store.read_channel(APP, "user:ann", 0, 10, now)] == [1, 2]
    assert [m.offset for m in await store.read_channel(APP, "user:ann", 0, 10, now + 60)] == [2]
    assert await store.get_message(APP, short.id, now + 60) is None
    assert await store.get_message(APP, long.id, now + 60) == long
    assert await store.get_message(APP, gone.id, now) is None


async def test_duplicate_channel_offset_is_a_conflict(store: Store, now: float) -> None:
    first = message(now, 1, message_id="first")
    await store.insert_messages([first])
    with pytest.raises(Conflict):
        await store.insert_messages([message(now, 1, message_id="second")])
    assert await store.read_channel(APP, "user:ann", 0, 10, now) == [first]


async def test_a_batch_with_a_conflict_inserts_nothing(store: Store, now: float) -> None:
    await store.insert_messages([message(now, 2, message_id="existing")])
    with pytest.raises(Conflict):
        await store.insert_messages([message(now, 1, message_id="fresh"), message(now, 2, message_id="clash")])
    assert await store.get_message(APP, "fresh", now) is None
    assert [m.id for m in await store.read_channel(APP, "user:ann", 0, 10, now)] == ["existing"]


async def test_same_offset_on_other_channels_and_apps_is_no_conflict(store: Store, now: float) -> None:
    batch = [message(now, 1), message(now, 1, channel="user:bob"), message(now, 1, app_id=OTHER_APP)]
    await store.insert_messages(batch)
    assert [await store.get_message(m.app_id, m.id, now) for m in batch] == batch


async def test_message_data_round_trips_unicode_and_nesting(store: Store, now: float) -> None:
    data = {
        "text": 'Grüße, 日本, emoji 🎉, quote " and backslash \\',
        "nested": {"list": [1, 2.5, True, False, None, [], {}], "deep": {"deeper": {"deepest": ["x"]}}},
        "$set": {"a.b": 1},  # keys MongoDB treats specially
        "big": 2**64 - 1,  # past BSON's int64
        "\u0000nul": "",
    }
    for offset, value in enumerate([data, [data, "tail"], "plain string", 0, None, False], start=1):
        sent = message(now, offset, data=value)
        await store.insert_messages([sent])
        found = await store.get_message(APP, sent.id, now)
        assert found is not None
        assert found.data == value
        assert type(found.data) is type(value)


async def test_messages_of_another_app_are_invisible(store: Store, now: float) -> None:
    mine = message(now, 1)
    await store.insert_messages([mine])
    assert await store.get_message(OTHER_APP, mine.id, now) is None
    assert await store.read_channel(OTHER_APP, "user:ann", 0, 10, now) == []
    assert await store.get_message(APP, mine.id, now) == mine


async def test_status_only_moves_forward(store: Store, now: float) -> None:
    ahead, behind, untouched = message(now, 1), message(now, 2), message(now, 3)
    await store.insert_messages([ahead, behind, untouched])

    await store.advance_status([ahead.id], "delivered")
    await store.advance_status([ahead.id, behind.id], "dispatched")
    assert await statuses(store, now, ahead, behind, untouched) == ["delivered", "dispatched", "accepted"]

    await store.advance_status([ahead.id, behind.id], "accepted")
    assert await statuses(store, now, ahead, behind, untouched) == ["delivered", "dispatched", "accepted"]

    await store.advance_status([ahead.id, behind.id], "acked")
    assert await statuses(store, now, ahead, behind, untouched) == ["acked", "acked", "accepted"]


async def test_mark_published(store: Store, now: float) -> None:
    confirmed, waiting = message(now, 1), message(now, 2)
    await store.insert_messages([confirmed, waiting])
    assert confirmed.published == "pending"

    await store.mark_published([confirmed.id])

    found = [await store.get_message(APP, m.id, now) for m in (confirmed, waiting)]
    assert [m.published for m in found if m is not None] == ["yes", "pending"]


async def test_unpublished_lists_old_enough_pending_messages_oldest_first(store: Store, now: float) -> None:
    first, second, confirmed, recent = (message(now, offset) for offset in (1, 2, 3, 4))
    expired = message(now, 5, expires_at=now - 1)
    await store.insert_messages([first, second, confirmed, recent, expired])
    await store.mark_published([confirmed.id])

    found = await store.unpublished(recent.ts, 10, now)

    assert [m.id for m in found] == [first.id, second.id]
    assert [m.id for m in await store.unpublished(recent.ts, 1, now)] == [first.id]


async def test_a_messages_sender_round_trips_through_every_read(store: Store, now: float) -> None:
    sent = message(now, 1)
    sent.sender = {"user_id": "bob", "conn_id": "c-7f3a"}
    await store.insert_messages([sent])

    found = await store.get_message(APP, sent.id, now)
    assert found is not None
    assert found.sender == {"user_id": "bob", "conn_id": "c-7f3a"}
    assert [m.sender for m in await store.read_channel(APP, "user:ann", 0, 10, now)] == [sent.sender]
    assert [m.sender for m in await store.unpublished(sent.ts + 1, 10, now)] == [sent.sender]


async def test_a_message_without_a_sender_reads_back_none(store: Store, now: float) -> None:
    sent = message(now, 1)
    await store.insert_messages([sent])

    found = await store.get_message(APP, sent.id, now)
    assert found is not None
    assert found.sender is None
    assert [m.sender for m in await store.read_channel(APP, "user:ann", 0, 10, now)] == [None]
    assert [m.sender for m in await store.unpublished(sent.ts + 1, 10, now)] == [None]


# Receipts --------------------------------------------------------------------


def delivery(m: Message, conn_id: str, at: float, device: str | None = "phone") -> Delivery:
    return Delivery(m.id, m.app_id, m.channel, m.offset, conn_id, device, at)


async def test_a_delivery_moves_the_message_to_delivered_with_per_device_detail(store: Store, now: float) -> None:
    m = message(now, 1)
    await store.insert_messages([m])
    await store.record_deliveries([delivery(m, "c1", now, "phone"), delivery(m, "c2", now + 1, None)])

    assert await statuses(store, now, m) == ["delivered"]
    detail = await store.deliveries_of(APP, m.id)
    assert [(d.conn_id, d.device, d.delivered_at, d.acked_at) for d in detail] == [
        ("c1", "phone", now, 0.0),
        ("c2", None, now + 1, 0.0),
    ]


async def test_a_delivery_reported_twice_keeps_its_first_time(store: Store, now: float) -> None:
    m = message(now, 1)
    await store.insert_messages([m])
    await store.record_deliveries([delivery(m, "c1", now)])
    await store.record_deliveries([delivery(m, "c1", now + 5), delivery(m, "c2", now + 5)])

    assert [(d.conn_id, d.delivered_at) for d in await store.deliveries_of(APP, m.id)] == [
        ("c1", now),
        ("c2", now + 5),
    ]


async def test_an_ack_covers_everything_up_to_its_offset_for_that_connection(store: Store, now: float) -> None:
    first, second, third = (message(now, offset) for offset in (1, 2, 3))
    await store.insert_messages([first, second, third])
    await store.record_deliveries([delivery(m, c, now) for m in (first, second, third) for c in ("c1", "c2")])

    await store.record_ack(APP, "ann", "c1", {"user:ann": 2}, now + 3)

    assert await statuses(store, now, first, second, third) == ["acked", "acked", "delivered"]
    acked = {d.conn_id: d.acked_at for d in await store.deliveries_of(APP, second.id)}
    assert acked == {"c1": now + 3, "c2": 0.0}
    assert await store.get_cursors(APP, "ann") == {"user:ann": 2}


async def test_an_older_ack_never_moves_the_cursor_back(store: Store, now: float) -> None:
    await store.record_ack(APP, "ann", "c1", {"user:ann": 5}, now)
    await store.record_ack(APP, "ann", "c2", {"user:ann": 3}, now)
    assert await store.get_cursors(APP, "ann") == {"user:ann": 5}


async def test_deliveries_of_another_app_are_invisible(store: Store, now: float) -> None:
    m = message(now, 1)
    await store.insert_messages([m])
    await store.record_deliveries([delivery(m, "c1", now)])
    assert await store.deliveries_of(OTHER_APP, m.id) == []


# Cursors ---------------------------------------------------------------------


async def test_cursor_never_moves_back(store: Store) -> None:
    await store.save_cursors(APP, "ann", {"user:ann": 5, "group:ops": 2})
    await store.save_cursors(APP, "ann", {"user:ann": 3, "group:ops": 4})
    assert await store.get_cursors(APP, "ann") == {"user:ann": 5, "group:ops": 4}


async def test_cursors_belong_to_one_user_of_one_app(store: Store) -> None:
    await store.save_cursors(APP, "ann", {"broadcast": 9})
    assert await store.get_cursors(APP, "bob") == {}
    assert await store.get_cursors(OTHER_APP, "ann") == {}
    assert await store.get_cursors(APP, "ann") == {"broadcast": 9}


async def test_cursors_of_many_users_are_read_together_each_under_its_user(store: Store) -> None:
    await store.save_cursors(APP, "ann", {"user:ann": 3, "broadcast": 1})
    await store.save_cursors(APP, "bob", {"user:bob": 7})
    await store.save_cursors(OTHER_APP, "cy", {"user:cy": 2})

    found = await store.cursors_of(APP, ["ann", "bob", "cy", "nobody"])

    assert found == {"ann": {"user:ann": 3, "broadcast": 1}, "bob": {"user:bob": 7}}
    assert await store.cursors_of(APP, []) == {}


# Apps and keys ---------------------------------------------------------------


async def test_an_inserted_app_reads_back(store: Store, now: float) -> None:
    app = App(app_id=APP, name="Shop ✓", created_at=now)
    await store.insert_app(app)
    assert await store.get_app(APP) == app
    assert await store.get_app(OTHER_APP) is None


async def test_inserting_an_app_twice_is_a_conflict(store: Store, now: float) -> None:
    await store.insert_app(App(app_id=APP, name="first", created_at=now))
    with pytest.raises(Conflict):
        await store.insert_app(App(app_id=APP, name="second", created_at=now))
    app = await store.get_app(APP)
    assert app is not None and app.name == "first"


async def test_replaced_api_key_stops_working(store: Store) -> None:
    await store.replace_api_key(APP, "hash-old")
    await store.replace_api_key(OTHER_APP, "hash-other")
    assert await store.app_for_key("hash-old") == APP

    await store.replace_api_key(APP, "hash-new")

    assert await store.app_for_key("hash-old") is None
    assert await store.app_for_key("hash-new") == APP
    assert await store.app_for_key("hash-other") == OTHER_APP


async def test_app_config_is_the_default_until_set(store: Store, now: float) -> None:
    await store.insert_app(App(app_id=APP, name="Shop", created_at=now))
    assert await store.get_app_config(APP) == AppConfig()
    assert await store.get_app_config("app_ffffffffffffffff") == AppConfig()  # no such app


async def test_app_config_reads_back_as_set(store: Store) -> None:
    config = AppConfig(
        webhook_url="https://shop.example/hooks?tag=ü&x=1",
        webhook_secret="s3cr€t",
        limits=AppLimits(messages_per_s=12.5, burst=40, max_payload=65536, connections_per_user=3, frames_per_s=2.0),
    )
    await store.set_app_config(APP, config)
    assert await store.get_app_config(APP) == config


async def test_setting_app_config_replaces_it_whole(store: Store) -> None:
    await store.set_app_config(APP, AppConfig(webhook_url="https://a.example/", limits=AppLimits(burst=9)))
    replacement = AppConfig(webhook_secret="only-this")
    await store.set_app_config(APP, replacement)
    assert await store.get_app_config(APP) == replacement


async def test_app_config_of_one_app_leaves_others_at_default(store: Store) -> None:
    await store.set_app_config(APP, AppConfig(webhook_url="https://a.example/"))
    assert await store.get_app_config(OTHER_APP) == AppConfig()


async def test_setting_app_config_leaves_the_app_record_alone(store: Store, now: float) -> None:
    """Config may be set before the app is inserted; inserting it must still work, and once."""
    await store.set_app_config(APP, AppConfig(webhook_url="https://a.example/"))
    app = App(app_id=APP, name="Shop", created_at=now)
    await store.insert_app(app)
    await store.set_app_config(APP, AppConfig(webhook_url="https://b.example/"))
    assert await store.get_app(APP) == app
    with pytest.raises(Conflict):
        await store.insert_app(App(app_id=APP, name="again", created_at=now))


# Tokens ----------------------------------------------------------------------


async def test_token_expires(store: Store, now: float) -> None:
    token = TokenRecord(token_hash="t1", app_id=APP, user_id="ann", expires_at=now + 300, created_at=now)
    await store.insert_token(token)
    assert await store.get_token("t1", now) == token
    assert await store.get_token("t1", now + 299) == token
    assert await store.get_token("t1", now + 300) is None


async def test_a_token_keeps_its_device_label(store: Store, now: float) -> None:
    token = TokenRecord("t2", APP, "ann", now + 300, now, device="phone")
    await store.insert_token(token)
    assert await store.get_token("t2", now) == token


async def test_a_token_keeps_its_publish_patterns(store: Store, now: float) -> None:
    token = TokenRecord("t3", APP, "ann", now + 300, now, publish=("group:room-*", "user:bob"))
    await store.insert_token(token)
    found = await store.get_token("t3", now)
    assert found == token
    assert found is not None and found.publish == ("group:room-*", "user:bob")


async def test_a_token_without_publish_patterns_reads_back_empty(store: Store, now: float) -> None:
    await store.insert_token(TokenRecord("t4", APP, "ann", now + 300, now))
    found = await store.get_token("t4", now)
    assert found is not None
    assert found.publish == ()


async def test_tokens_are_read_together_by_hash(store: Store, now: float) -> None:
    mine = TokenRecord("t1", APP, "ann", now + HOUR, now, device="phone", publish=("group:room-*",))
    theirs = TokenRecord("t2", "app-2", "bob", now + HOUR, now)
    await store.insert_token(mine)
    await store.insert_token(theirs)

    assert await store.get_tokens(["t2", "t1"], now) == {"t1": mine, "t2": theirs}


async def test_reading_tokens_together_leaves_out_unknown_and_expired_ones(store: Store, now: float) -> None:
    await store.insert_token(TokenRecord("live", APP, "ann", now + HOUR, now))
    await store.insert_token(TokenRecord("ending", APP, "ann", now + 300, now))

    found = await store.get_tokens(["live", "ending", "unknown"], now + 300)

    assert list(found) == ["live"]


async def test_reading_no_tokens_or_the_same_one_twice(store: Store, now: float) -> None:
    token = TokenRecord("t1", APP, "ann", now + HOUR, now)
    await store.insert_token(token)

    assert await store.get_tokens([], now) == {}
    assert await store.get_tokens(["t1", "t1"], now) == {"t1": token}


async def test_deleted_token_is_gone(store: Store, now: float) -> None:
    await store.insert_token(TokenRecord("t1", APP, "ann", now + HOUR, now))
    await store.insert_token(TokenRecord("t2", APP, "ann", now + HOUR, now))

    assert await store.delete_token("t1") is True
    assert await store.get_token("t1", now) is None
    assert await store.delete_token("t1") is False
    assert await store.get_token("t2", now) is not None


async def test_deleting_a_users_tokens_deletes_all_of_them_and_counts_them(store: Store, now: float) -> None:
    for token_hash in ("t1", "t2", "t3"):
        await store.insert_token(TokenRecord(token_hash, APP, "ann", now + HOUR, now))

    assert await store.delete_user_tokens(APP, "ann") == 3
    assert [await store.get_token(t, now) for t in ("t1", "t2", "t3")] == [None, None, None]
    assert await store.delete_user_tokens(APP, "ann") == 0


async def test_deleting_a_users_tokens_spares_other_users_and_apps(store: Store, now: float) -> None:
    await store.insert_token(TokenRecord("mine", APP, "ann", now + HOUR, now))
    others = [TokenRecord("bob", APP, "bob", now + HOUR, now), TokenRecord("ann-b", OTHER_APP, "ann", now + HOUR, now)]
    for token in others:
        await store.insert_token(token)

    assert await store.delete_user_tokens(APP, "ann") == 1
    assert [await store.get_token(t.token_hash, now) for t in others] == others


# Groups ----------------------------------------------------------------------


async def test_joining_a_group_makes_a_member(store: Store, now: float) -> None:
    assert await store.add_member(APP, "ops", "ann", 7, now) is True
    assert await store.list_members(APP, "ops", "", 10) == ["ann"]
    assert await store.groups_of(APP, "ann") == {"ops": 7}


async def test_joining_twice_keeps_the_first_record(store: Store, now: float) -> None:
    assert await store.add_member(APP, "ops", "ann", 7, now) is True
    assert await store.add_member(APP, "ops", "ann", 12, now + 5) is False
    assert await store.groups_of(APP, "ann") == {"ops": 7}
    assert await store.list_members(APP, "ops", "", 10) == ["ann"]


async def test_concurrent_joins_of_one_user_have_one_winner(store: Store, now: float) -> None:
    results = await asyncio.gather(*(store.add_member(APP, "ops", "ann", k, now) for k in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    joined_after = (await store.groups_of(APP, "ann"))["ops"]
    assert results[joined_after] is True  # the record kept is the winner's


async def test_a_removed_member_is_gone(store: Store, now: float) -> None:
    await store.add_member(APP, "ops", "ann", 0, now)
    await store.add_member(APP, "ops", "bob", 0, now)

    assert await store.remove_member(APP, "ops", "ann") is True
    assert await store.remove_member(APP, "ops", "ann") is False
    assert await store.list_members(APP, "ops", "", 10) == ["bob"]
    assert await store.groups_of(APP, "ann") == {}


async def test_removing_a_non_member_changes_nothing(store: Store, now: float) -> None:
    await store.add_member(APP, "ops", "ann", 0, now)
    assert await store.remove_member(APP, "ops", "bob") is False
    assert await store.remove_member(APP, "dev", "ann") is False
    assert await store.list_members(APP, "ops", "", 10) == ["ann"]


async def test_a_member_who_left_can_join_again_from_a_new_position(store: Store, now: float) -> None:
    await store.add_member(APP, "ops", "ann", 3, now)
    await store.remove_member(APP, "ops", "ann")
    assert await store.add_member(APP, "ops", "ann", 9, now + 1) is True
    assert await store.groups_of(APP, "ann") == {"ops": 9}


async def test_list_members_pages_in_ascending_order(store: Store, now: float) -> None:
    users = ["zed", "ann", "bob@x.io", "Carl", "ann.b", "u:1", "u-2", "u+3", "u=4", "u_5", "009"]
    for user in users:
        await store.add_member(APP, "ops", user, 0, now)
    await store.add_member(APP, "dev", "aaa", 0, now)

    pages, after = [], ""
    while page := await store.list_members(APP, "ops", after, 3):
        assert len(page) <= 3
        pages.append(page)
        after = page[-1]
    # Plain code point (byte) order, the same in both stores: capitals before lower case.
    assert [user for page in pages for user in page] == sorted(users)
    assert len(pages) == 4
    assert await store.list_members(APP, "ops", "u:1", 10) == ["u=4", "u_5", "zed"]


async def test_list_members_with_a_limit_of_zero_returns_nothing(store: Store, now: float) -> None:
    await store.add_member(APP, "ops", "ann", 0, now)
    assert await store.list_members(APP, "ops", "", 0) == []


async def test_groups_of_maps_each_group_to_its_joined_after(store: Store, now: float) -> None:
    await store.add_member(APP, "ops", "ann", 4, now)
    await store.add_member(APP, "dev:eu", "ann", 0, now)
    await store.add_member(APP, "ops", "bob", 8, now)
    assert await store.groups_of(APP, "ann") == {"ops": 4, "dev:eu": 0}
    assert await store.groups_of(APP, "nobody") == {}


async def test_memberships_of_many_users_are_read_together_each_under_its_user(store: Store, now: float) -> None:
    await store.add_member(APP, "ops", "ann", 4, now)
    await store.add_member(APP, "dev", "ann", 0, now)
    await store.add_member(APP, "ops", "bob", 8, now)
    await store.add_member(OTHER_APP, "ops", "cy", 1, now)

    found = await store.memberships(APP, ["ann", "bob", "cy", "nobody"])

    assert found == {"ann": {"ops": 4, "dev": 0}, "bob": {"ops": 8}}
    assert await store.memberships(APP, []) == {}


async def test_groups_of_one_app_are_invisible_to_another(store: Store, now: float) -> None:
    await store.add_member(APP, "ops", "ann", 4, now)

    assert await store.list_members(OTHER_APP, "ops", "", 10) == []
    assert await store.groups_of(OTHER_APP, "ann") == {}
    assert await store.remove_member(OTHER_APP, "ops", "ann") is False
    assert await store.add_member(OTHER_APP, "ops", "ann", 1, now) is True

    assert await store.groups_of(APP, "ann") == {"ops": 4}
    assert await store.groups_of(OTHER_APP, "ann") == {"ops": 1}


# Idempotency -----------------------------------------------------------------


async def test_idempotency_claim_then_result(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None
    await store.complete_idempotency(APP, "req-1", '{"messages": []}')
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) == '{"messages": []}'


async def test_idempotency_in_progress_returns_empty(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) == ""


async def test_concurrent_idempotency_claims_have_one_winner(store: Store, now: float) -> None:
    results = await asyncio.gather(*(store.reserve_idempotency(APP, "req-1", now + HOUR, now) for _ in range(10)))
    assert sorted(results, key=str) == [""] * 9 + [None]


async def test_released_idempotency_can_be_claimed_again(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None
    await store.release_idempotency(APP, "req-1")
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None


async def test_expired_idempotency_claim_is_claimed_afresh(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now + 60, now) is None
    await store.complete_idempotency(APP, "req-1", '{"old": true}')

    assert await store.reserve_idempotency(APP, "req-1", now + 600, now + 60) is None
    assert await store.reserve_idempotency(APP, "req-1", now + 600, now + 90) == ""


async def test_a_claim_abandoned_in_progress_is_taken_over_once(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None
    later = now + CLAIM_TIMEOUT_S + 1
    takeovers = await asyncio.gather(*(store.reserve_idempotency(APP, "req-1", now + HOUR, later) for _ in range(5)))
    assert sorted(takeovers, key=str) == [""] * 4 + [None]


async def test_a_completed_claim_is_never_taken_over(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None
    await store.complete_idempotency(APP, "req-1", '{"done": 1}')
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now + CLAIM_TIMEOUT_S * 2) == '{"done": 1}'


async def test_claim_already_expired_by_the_clock_is_claimed_afresh(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now - 60, now - 120) is None
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) == ""


async def test_idempotency_keys_of_different_apps_are_independent(store: Store, now: float) -> None:
    assert await store.reserve_idempotency(APP, "req-1", now + HOUR, now) is None
    assert await store.reserve_idempotency(OTHER_APP, "req-1", now + HOUR, now) is None


# Availability ----------------------------------------------------------------


async def test_starting_again_changes_nothing(store: Store) -> None:
    await store.allocate_offsets(APP, {"user:ann": 1})
    await store.start()
    await store.ping()
    assert await store.allocate_offsets(APP, {"user:ann": 1}) == {"user:ann": 2}


async def test_what_was_written_survives_reopening_the_store(
    store: Store, new_store: Callable[[], Store], now: float
) -> None:
    sent = message(now, 1)
    await store.insert_messages([sent])
    await store.allocate_offsets(APP, {"user:ann": 1})
    await store.close()

    reopened = new_store()
    await reopened.start()
    try:
        assert await reopened.get_message(APP, sent.id, now) == sent
        assert await reopened.allocate_offsets(APP, {"user:ann": 1}) == {"user:ann": 2}
    finally:
        await reopened.close()


async def test_mongo_store_pointed_at_a_closed_port_is_unavailable() -> None:
    """MongoDB only: a down server must become Unavailable (a 503), not a hang or a driver error."""
    store = MongoStore(f"mongodb://127.0.0.1:{free_port()}/", database="herald_unreachable", timeout_s=1)
    try:
        async with asyncio.timeout(20):  # a bound on the test, not a speed assertion
            with pytest.raises(Unavailable):
                await store.start()
            with pytest.raises(Unavailable):
                await store.allocate_offsets(APP, {"user:ann": 1})
    finally:
        await store.close()


async def test_sqlite_store_on_an_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    """SQLite only: a file that cannot be opened is a fault of the store, reported as one."""
    (tmp_path / "herald.db").mkdir()
    store = SqliteStore(str(tmp_path / "herald.db"))
    try:
        with pytest.raises(Unavailable):
            await store.start()
    finally:
        await store.close()
