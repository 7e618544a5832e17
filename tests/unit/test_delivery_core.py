"""The push node's delivery core, driven with plain data: events in, decisions out."""

from __future__ import annotations

from typing import Any

from herald.services.push.decisions import Read
from herald.services.push.delivery import EXPIRING_LEAD_S, DeliveryCore
from herald.services.push.handshake import Identity
from herald.services.push.lifetimes import KICKS_KEPT_S
from herald.services.push.readers import Reader
from herald.services.push.sequencing import HOLE_GRACE_S, MAX_HELD
from tests.support.frames import decode_frames

APP = "app-1"
GROUP = "group:g"
NOW = 1_000_000.0


def reader(user: str = "ann", *, conn: str = "c1", token: str = "t1", exp: float = float("inf")) -> Reader:
    return Reader(sink=None, conn_id=conn, app_id=APP, user_id=user, device=None, token_hash=token, expires_at=exp)


def message(channel: str, offset: int, ts: float = NOW) -> dict[str, Any]:
    return {
        "id": f"{channel}#{offset}",
        "app": APP,
        "channel": channel,
        "offset": offset,
        "event": "e",
        "data": {},
        "ts": int(ts * 1000),
    }


def joined(core: DeliveryCore, who: Reader, groups: dict[str, int] | None = None, now: float = NOW) -> Reader:
    """A connection added and loaded with these memberships (group name -> joined after)."""
    assert core.add(who, now, now)
    core.load_groups(who, groups or {})
    return who


def frames(core: DeliveryCore, who: Reader) -> list[dict[str, Any]]:
    return decode_frames(b"".join(core.take().writes.get(who, [])))


def offsets_written(core: DeliveryCore, who: Reader, channel: str) -> list[int]:
    return [f["offset"] for f in frames(core, who) if f["type"] == "message" and f["channel"] == channel]


def serve_reads(core: DeliveryCore, log: list[dict[str, Any]], now: float = NOW) -> None:
    """Answer every read the core asked for from ``log`` (the channel as stored)."""
    while True:
        decisions = core.take()
        pending = decisions.reads
        core._out = decisions  # keep the writes for the caller
        core._out.reads = []
        if not pending:
            return
        for read in pending:
            page = [m for m in log if m["channel"] == read.channel and m["offset"] > read.after]
            core.fetched(read, page, now)


# Reading and order ---------------------------------------------------------------------


def test_a_caught_up_reader_gets_live_messages_in_one_write() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {"user:ann": 0}, {"user:ann": 0}, NOW)
    core.messages([message("user:ann", 1), message("user:ann", 2)], NOW)
    decisions = core.take()
    assert len(decisions.writes[ann]) == 1
    assert [f["offset"] for f in decode_frames(decisions.writes[ann][0])] == [1, 2]


def test_messages_arriving_before_the_start_wait_for_it() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.messages([message("user:ann", 3)], NOW)
    assert core.take().writes == {}
    core.start(ann, {"user:ann": 2}, {"user:ann": 2}, NOW)
    assert offsets_written(core, ann, "user:ann") == [3]


def test_a_backlog_is_read_from_the_store_then_live_messages_follow_in_order() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {"user:ann": 0}, {"user:ann": 2}, NOW)
    [read] = core.take().reads
    assert (read.channel, read.after) == ("user:ann", 0)
    core.messages([message("user:ann", 3)], NOW)
    core.fetched(read, [message("user:ann", 1), message("user:ann", 2)], NOW)
    assert offsets_written(core, ann, "user:ann") == [1, 2, 3]


def test_a_gap_is_read_from_the_store_after_its_grace() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {"user:ann": 0}, {"user:ann": 0}, NOW)
    core.messages([message("user:ann", 2)], NOW)
    decisions = core.take()
    assert decisions.reads == [] and decisions.wake_at == NOW + HOLE_GRACE_S
    core.tick(NOW + HOLE_GRACE_S)
    [read] = core.take().reads
    assert read.after == 0


# Membership bounds reading ----------------------------------------------------------------


def test_a_late_member_resuming_from_zero_starts_at_their_join() -> None:
    core = DeliveryCore()
    mallory = joined(core, reader("mallory"), {"g": 3})
    positions = core.readable(mallory, {GROUP: 0})
    assert positions == {GROUP: 3}
    core.start(mallory, positions, {GROUP: 3}, NOW)
    decisions = core.take()
    assert decisions.reads == [] and decisions.writes == {}


def test_a_member_never_gets_a_live_message_from_before_their_join() -> None:
    core = DeliveryCore()
    mallory = joined(core, reader("mallory"), {"g": 3})
    core.start(mallory, {GROUP: 0}, {GROUP: 3}, NOW)
    core.messages([message(GROUP, 2), message(GROUP, 3), message(GROUP, 4)], NOW)
    assert offsets_written(core, mallory, GROUP) == [4]


def test_a_stored_cursor_below_the_join_is_raised_to_it() -> None:
    core = DeliveryCore()
    bob = joined(core, reader("bob"), {"g": 10})
    assert core.positions(bob, {GROUP: 4}, {"broadcast": 0})[GROUP] == 10


def test_a_rejoin_skips_what_was_sent_while_the_user_was_out() -> None:
    core = DeliveryCore()
    bob = joined(core, reader("bob"), {"g": 0})
    core.start(bob, {GROUP: 0}, {GROUP: 0}, NOW)
    core.messages([message(GROUP, 1)], NOW)
    core.leave(APP, "bob", GROUP)
    core.take()
    core.join(APP, "bob", GROUP, 5, NOW)  # offsets 2..5 were sent while bob was out
    core.resume(bob, {GROUP: 1}, NOW)
    log = [message(GROUP, offset) for offset in range(1, 8)]
    serve_reads(core, log)
    assert offsets_written(core, bob, GROUP) == [6, 7]


def test_a_store_page_for_a_channel_left_meanwhile_is_dropped() -> None:
    core = DeliveryCore()
    bob = joined(core, reader("bob"), {"g": 0})
    core.start(bob, {GROUP: 0}, {GROUP: 5}, NOW)
    [read] = core.take().reads
    core.leave(APP, "bob", GROUP)
    core.fetched(read, [message(GROUP, 1)], NOW)
    assert core.take().writes == {}
    assert GROUP not in bob.sequences


def test_a_leave_received_before_the_start_undoes_the_membership_read_at_connect() -> None:
    core = DeliveryCore()
    bob = reader("bob")
    assert core.add(bob, NOW, NOW)
    core.leave(APP, "bob", GROUP)  # arrives while the node reads bob's groups from the store
    core.load_groups(bob, {"g": 0})  # that read predates the leave
    assert not bob.may_read(GROUP)


def test_a_join_writes_the_groups_route_before_its_backlog_is_read() -> None:
    core = DeliveryCore()
    bob = joined(core, reader("bob"))
    core.start(bob, {}, {}, NOW)
    core.join(APP, "bob", GROUP, 2, NOW)
    decisions = core.take()
    assert decisions.routes == [(APP, GROUP)]
    assert [(read.channel, read.after) for read in decisions.reads] == [(GROUP, 2)]


# Acks --------------------------------------------------------------------------------------


def test_an_ack_above_what_was_sent_is_clamped_and_answered_with_an_error_frame() -> None:
    core = DeliveryCore()
    ann = joined(core, reader(), {"x": 0})
    core.start(ann, {"group:x": 0}, {"group:x": 0}, NOW)
    core.messages([message("group:x", 1), message("group:x", 2)], NOW)
    core.take()
    core.ack(ann, "group:x", 2**63 - 1)
    decisions = core.take()
    assert decisions.acks == [(ann, "group:x", 2)]
    [error] = decode_frames(b"".join(decisions.writes[ann]))
    assert error["type"] == "error" and error["code"] == "ack_beyond_sent"


def test_an_ack_within_what_was_sent_is_recorded_without_a_frame() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {"user:ann": 5}, {"user:ann": 5}, NOW)
    core.ack(ann, "user:ann", 4)
    decisions = core.take()
    assert decisions.acks == [(ann, "user:ann", 4)] and decisions.writes == {}


def test_an_ack_on_a_channel_the_connection_does_not_read_is_refused() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {}, {}, NOW)
    core.ack(ann, "user:bob", 1)
    decisions = core.take()
    assert decisions.acks == []
    assert decode_frames(decisions.writes[ann][0])[0]["code"] == "forbidden_channel"


def test_a_clean_close_hands_over_the_connections_acks_and_stops_writing() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {"user:ann": 3}, {"user:ann": 3}, NOW)
    core.ack(ann, "user:ann", 3)
    assert core.closing(ann) == {"user:ann": 3}
    core.take()
    core.messages([message("user:ann", 4)], NOW)
    assert core.take().writes == {}


# Token lifetimes ---------------------------------------------------------------------------


def test_a_connection_is_warned_before_its_token_expires_then_closed_with_4001() -> None:
    core = DeliveryCore()
    ann = joined(core, reader(exp=NOW + 3600))
    core.start(ann, {}, {}, NOW)
    core.take()
    core.tick(NOW + 3600 - EXPIRING_LEAD_S)
    [expiring] = frames(core, ann)
    assert expiring == {"type": "expiring", "in_s": EXPIRING_LEAD_S}
    core.tick(NOW + 3600)
    assert core.take().closes == [(ann, 4001, "token expired")]


def test_a_short_token_is_warned_at_half_its_remaining_lifetime() -> None:
    core = DeliveryCore()
    ann = joined(core, reader(exp=NOW + 5))
    assert core.take().wake_at == NOW + 2.5
    core.tick(NOW + 2.5)
    assert frames(core, ann) == [{"type": "expiring", "in_s": 2.5}]


def test_a_refresh_moves_the_deadline_and_is_answered_with_refreshed() -> None:
    core = DeliveryCore()
    ann = joined(core, reader(exp=NOW + 5))
    core.tick(NOW + 2.5)
    core.take()
    core.refresh(ann, Identity(APP, "ann", NOW + 65), "t2", NOW + 3, NOW + 3)
    assert frames(core, ann) == [{"type": "refreshed", "exp": NOW + 65}]
    core.tick(NOW + 5)
    assert core.take().closes == []
    assert (ann.token_hash, ann.expires_at) == ("t2", NOW + 65)


def test_a_refresh_with_a_token_of_another_user_changes_nothing() -> None:
    core = DeliveryCore()
    ann = joined(core, reader(exp=NOW + 5))
    core.refresh(ann, Identity(APP, "bob", NOW + 65), "t2", NOW, NOW)
    assert frames(core, ann)[-1]["code"] == "token_mismatch"
    assert ann.expires_at == NOW + 5
    core.tick(NOW + 5)
    assert [code for _, code, _ in core.take().closes] == [4001]


def test_a_refresh_with_an_inactive_token_is_refused() -> None:
    core = DeliveryCore()
    ann = joined(core, reader(exp=NOW + 5))
    core.refresh(ann, None, "t2", NOW, NOW)
    assert frames(core, ann)[-1]["code"] == "invalid_token"


def test_a_connection_whose_token_expired_during_its_handshake_is_refused() -> None:
    core = DeliveryCore()
    ann = reader(exp=NOW - 1)
    assert not core.add(ann, NOW - 2, NOW)
    assert core.take().closes == [(ann, 4001, "token expired")]


# Kicks and revocations ---------------------------------------------------------------------


def test_a_kick_of_one_token_closes_only_the_connections_using_it() -> None:
    core = DeliveryCore()
    phone = joined(core, reader(conn="c1", token="t1"))
    laptop = joined(core, reader(conn="c2", token="t2"))
    core.kick(APP, "ann", "t1", "revoked", NOW)
    assert core.take().closes == [(phone, 4003, "revoked")]
    assert not laptop.closing


def test_a_connection_checked_before_a_revoke_arrived_is_refused_when_it_joins() -> None:
    core = DeliveryCore()
    core.kick(APP, "ann", "t1", "revoked", NOW)
    late = reader(token="t1")
    assert not core.add(late, NOW - 0.5, NOW + 0.2)
    assert core.take().closes == [(late, 4003, "revoked")]


def test_a_connection_checked_after_a_revoke_joins() -> None:
    core = DeliveryCore()
    core.kick(APP, "ann", None, "revoked", NOW)
    assert core.add(reader(token="t9"), NOW + 0.1, NOW + 0.2)


def test_a_connection_checked_before_the_oldest_kick_remembered_is_told_to_retry() -> None:
    core = DeliveryCore()
    core.kick(APP, "bob", None, "revoked", NOW)
    core.tick(NOW + KICKS_KEPT_S + 1)  # the kick is forgotten
    stale = reader()
    assert not core.add(stale, NOW - 1, NOW + KICKS_KEPT_S + 1)
    assert core.take().closes == [(stale, 1013, "reconnect later")]


# Bounds and memory -------------------------------------------------------------------------


def test_more_messages_held_than_the_bound_close_the_connection_with_4008() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {"user:ann": 0}, {"user:ann": 5}, NOW)  # reading its backlog: live ones wait
    core.take()
    core.messages([message("user:ann", offset) for offset in range(10, 10 + MAX_HELD + 1)], NOW)
    assert core.take().closes == [(ann, 4008, "slow consumer: resume later")]


def test_a_node_after_connect_and_disconnect_churn_holds_what_a_fresh_one_does() -> None:
    core = DeliveryCore()
    fresh = core.sizes()
    for index in range(200):
        now = NOW + index
        who = joined(core, reader(f"u{index % 7}", conn=f"c{index}", exp=now + 10), {"g": 0}, now)
        core.start(who, {"user:" + who.user_id: 0, GROUP: 0}, {}, now)
        core.messages([message(GROUP, index + 2)], now)  # a gap: a hole waits for its read
        core.kick(APP, who.user_id, "t1", "kicked", now + 0.5)
        core.remove(who)
    core.tick(NOW + 200 + KICKS_KEPT_S + 1)
    core.take()
    assert core.sizes() == fresh


def test_a_read_for_a_removed_connection_is_not_applied() -> None:
    core = DeliveryCore()
    ann = joined(core, reader())
    core.start(ann, {"user:ann": 0}, {"user:ann": 3}, NOW)
    [read] = core.take().reads
    core.remove(ann)
    core.fetched(read, [message("user:ann", 1)], NOW)
    assert core.take().writes == {}
    assert isinstance(read, Read)
