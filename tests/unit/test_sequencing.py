from herald.services.push.sequencing import HOLE_GRACE_S, HOLE_WAIT_S, MAX_HELD, PAGE, ChannelSequence, contiguous_runs


def m(offset: int) -> dict:
    return {"channel": "user:7", "offset": offset, "id": f"m{offset}"}


def offsets(step) -> list[int]:
    return [message["offset"] for message in step.write]


def started(position: int = 0) -> ChannelSequence:
    sequence = ChannelSequence()
    assert sequence.start(position, 0.0).fetch_after == position
    assert offsets(sequence.fetched([], 0.0)) == []
    return sequence


def test_start_reads_the_backlog_after_the_position() -> None:
    sequence = ChannelSequence()
    assert sequence.start(41, 0.0).fetch_after == 41
    assert offsets(sequence.fetched([m(42), m(43)], 0.0)) == [42, 43]


def test_a_start_at_the_channels_head_reads_nothing() -> None:
    sequence = ChannelSequence()
    step = sequence.start(41, 0.0, head=41)
    assert step.fetch_after is None and step.write == []
    assert sequence.started and not sequence.fetching


def test_a_start_behind_the_channels_head_reads_the_backlog() -> None:
    sequence = ChannelSequence()
    assert sequence.start(40, 0.0, head=41).fetch_after == 40


def test_a_start_at_the_head_is_followed_by_live_messages_at_once() -> None:
    sequence = ChannelSequence()
    sequence.start(41, 0.0, head=41)
    assert offsets(sequence.live(m(42), 0.0)) == [42]


def test_messages_held_before_a_start_at_the_head_are_written_by_it() -> None:
    sequence = ChannelSequence()
    for offset in (42, 43):
        sequence.live(m(offset), 0.0)
    assert offsets(sequence.start(41, 0.0, head=41)) == [42, 43]


def test_a_gap_in_messages_held_before_a_start_at_the_head_is_read_from_the_store_after_the_grace() -> None:
    sequence = ChannelSequence()
    sequence.live(m(43), 0.0)
    step = sequence.start(41, 0.0, head=41)
    assert step.write == [] and step.fetch_after is None
    assert sequence.tick(HOLE_GRACE_S).fetch_after == 41


def test_live_messages_wait_until_the_position_is_known() -> None:
    sequence = ChannelSequence()
    assert offsets(sequence.live(m(5), 0.0)) == []
    sequence.start(3, 0.0)
    assert offsets(sequence.fetched([m(4), m(5)], 0.0)) == [4, 5]


def test_live_messages_during_the_backlog_read_follow_it_without_duplicates() -> None:
    sequence = ChannelSequence()
    sequence.start(0, 0.0)
    for offset in (3, 4, 5):
        assert offsets(sequence.live(m(offset), 0.0)) == []
    assert offsets(sequence.fetched([m(1), m(2), m(3)], 0.0)) == [1, 2, 3, 4, 5]


def test_in_order_live_messages_are_written_at_once() -> None:
    sequence = started()
    assert offsets(sequence.live(m(1), 0.0)) == [1]
    assert offsets(sequence.live(m(2), 0.0)) == [2]


def test_a_duplicate_is_never_written_twice() -> None:
    sequence = started()
    sequence.live(m(1), 0.0)
    assert offsets(sequence.live(m(1), 0.0)) == []


def test_an_early_message_waits_for_the_missing_one_then_asks_the_store() -> None:
    sequence = started()
    step = sequence.live(m(2), 0.0)
    assert offsets(step) == [] and step.fetch_after is None
    assert sequence.tick(HOLE_GRACE_S / 2).fetch_after is None
    assert sequence.tick(HOLE_GRACE_S).fetch_after == 0
    assert offsets(sequence.live(m(1), 0.1)) == []  # the read is under way
    assert offsets(sequence.fetched([m(1), m(2)], 0.2)) == [1, 2]


def test_a_missing_offset_arriving_live_within_the_grace_needs_no_read() -> None:
    sequence = started()
    sequence.live(m(2), 0.0)
    assert offsets(sequence.live(m(1), HOLE_GRACE_S / 2)) == [1, 2]
    assert sequence.hole_since is None
    assert sequence.tick(HOLE_WAIT_S).fetch_after is None


def test_a_missing_offset_found_in_the_store_fills_the_gap() -> None:
    sequence = started()
    sequence.live(m(2), 0.0)
    sequence.tick(HOLE_GRACE_S)
    assert offsets(sequence.fetched([m(1), m(2)], 0.0)) == [1, 2]


def test_the_store_is_read_once_per_hole_before_the_final_read() -> None:
    sequence = started()
    sequence.live(m(2), 0.0)
    assert sequence.tick(HOLE_GRACE_S).fetch_after == 0
    sequence.fetched([m(2)], HOLE_GRACE_S)
    assert sequence.tick(1.0).fetch_after is None
    assert sequence.tick(HOLE_WAIT_S).fetch_after == 0


def test_a_concurrent_write_arriving_live_during_the_wait_fills_the_gap() -> None:
    sequence = started()
    sequence.live(m(2), 0.0)
    sequence.tick(HOLE_GRACE_S)
    assert offsets(sequence.fetched([m(2)], 0.0)) == []
    assert offsets(sequence.live(m(1), 1.0)) == [1, 2]


def test_a_hole_is_skipped_only_after_the_wait_and_a_last_read() -> None:
    sequence = started()
    sequence.live(m(2), 0.0)
    sequence.tick(HOLE_GRACE_S)
    sequence.fetched([m(2)], 0.0)
    assert sequence.tick(HOLE_WAIT_S / 2).fetch_after is None
    last = sequence.tick(HOLE_WAIT_S + 0.1)
    assert last.fetch_after == 0
    assert offsets(sequence.fetched([m(2)], HOLE_WAIT_S + 0.2)) == [2]
    assert offsets(sequence.live(m(3), HOLE_WAIT_S + 0.3)) == [3]


def test_a_full_page_asks_for_the_next_one() -> None:
    sequence = ChannelSequence()
    sequence.start(0, 0.0)
    step = sequence.fetched([m(i) for i in range(1, PAGE + 1)], 0.0)
    assert len(step.write) == PAGE and step.fetch_after == PAGE
    assert offsets(sequence.fetched([m(PAGE + 1)], 0.0)) == [PAGE + 1]


def test_a_resume_behind_what_was_sent_replays_from_there() -> None:
    sequence = started()
    for offset in (1, 2, 3):
        sequence.live(m(offset), 0.0)
    assert sequence.start(1, 0.0).fetch_after == 1
    assert offsets(sequence.fetched([m(2), m(3)], 0.0)) == [2, 3]


def test_too_much_held_is_an_overflow() -> None:
    sequence = ChannelSequence()
    overflow = [sequence.live(m(offset), 0.0).overflow for offset in range(1, MAX_HELD + 2)]
    assert overflow[-1] and not any(overflow[:-1])


def test_a_gap_before_a_message_accepted_long_ago_is_skipped_at_once() -> None:
    now = 1_000_000.0
    old = {**m(2), "ts": int((now - HOLE_WAIT_S - 1) * 1000)}
    sequence = ChannelSequence()
    sequence.start(0, now)
    assert offsets(sequence.fetched([old], now)) == [2]


def test_a_gap_before_a_recent_message_is_waited_for() -> None:
    now = 1_000_000.0
    recent = {**m(2), "ts": int((now - 1) * 1000)}
    sequence = ChannelSequence()
    sequence.start(0, now)
    assert offsets(sequence.fetched([recent], now)) == []
    assert sequence.hole_since == now


def test_a_caught_up_sequence_takes_a_whole_run_at_once() -> None:
    sequence = started(4)

    assert sequence.take_run(5, 8)
    assert sequence.sent == 8
    assert offsets(sequence.live(m(9), 0.0)) == [9]


def test_a_run_that_does_not_follow_what_was_sent_is_left_to_live() -> None:
    sequence = started(4)

    assert not sequence.take_run(6, 7)  # 5 is missing
    assert not sequence.take_run(3, 4)  # already sent
    assert sequence.sent == 4


def test_no_run_is_taken_while_anything_is_held_or_read_or_before_the_start() -> None:
    holding = started(0)
    holding.live(m(3), 0.0)  # 1 and 2 missing: 3 is held, the store is read
    reading = ChannelSequence()
    reading.start(0, 0.0)

    assert not holding.take_run(1, 2)
    assert not reading.take_run(1, 1)
    assert not ChannelSequence().take_run(1, 1)


def test_runs_split_where_the_channel_app_or_offset_sequence_changes() -> None:
    batch = [
        {"app": "a", "channel": "group:x", "offset": 1},
        {"app": "a", "channel": "group:x", "offset": 2},
        {"app": "a", "channel": "group:y", "offset": 3},
        {"app": "b", "channel": "group:y", "offset": 4},
        {"app": "b", "channel": "group:y", "offset": 6},
    ]

    runs = contiguous_runs(batch)

    assert [[message["offset"] for message in run] for run in runs] == [[1, 2], [3], [4], [6]]


def test_skipping_an_expired_offset_keeps_what_it_released_when_another_gap_follows() -> None:
    """Offsets 1 and 3 expired, 2 is old, 4 live: the read skips 1 and writes 2, then waits
    at 3 (found by tests/unit/test_delivery_properties.py: 2 was counted as sent, never written)."""
    now = 100.0
    old = {**m(2), "ts": (now - HOLE_WAIT_S - 1) * 1000}
    sequence = ChannelSequence()
    sequence.start(0, now)
    sequence.live({**m(4), "ts": now * 1000}, now)
    step = sequence.fetched([old, {**m(4), "ts": now * 1000}], now)
    assert offsets(step) == [2]
    assert sequence.sent == 2 and sequence.hole_since == now
