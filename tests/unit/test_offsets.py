from herald.core.offsets import assign_offsets, count_per_channel


def test_counts_each_channel_once_in_first_seen_order() -> None:
    assert list(count_per_channel(["user:b", "user:a", "user:b"]).items()) == [("user:b", 2), ("user:a", 1)]


def test_a_channel_range_ends_at_the_allocated_counter() -> None:
    assert assign_offsets(["user:a"] * 3, {"user:a": 10}) == [8, 9, 10]


def test_interleaved_channels_each_take_their_own_range_in_request_order() -> None:
    channels = ["user:a", "user:b", "user:a", "user:b", "user:c"]
    assert assign_offsets(channels, {"user:a": 2, "user:b": 7, "user:c": 1}) == [1, 6, 2, 7, 1]
