import pytest

from herald.core.errors import BadRequest
from herald.core.permissions import check_patterns, first_refusal, may_publish


def test_no_pattern_means_no_publishing() -> None:
    assert not may_publish([], "group:room-1")


def test_a_wildcard_pattern_allows_the_channels_it_matches_and_no_others() -> None:
    assert may_publish(["group:room-*"], "group:room-1")
    assert not may_publish(["group:room-*"], "group:ops")
    assert not may_publish(["group:room-*"], "user:room-1")


def test_patterns_are_case_sensitive() -> None:
    assert not may_publish(["group:Room-*"], "group:room-1")


def test_a_group_needs_membership_as_well_as_a_pattern() -> None:
    assert first_refusal(["group:*"], "group:ops", set()) == ("not_a_member", "only members may publish to group:ops")
    assert first_refusal(["group:*"], "group:ops", {"group:ops"}) is None


def test_a_user_channel_needs_only_the_pattern() -> None:
    assert first_refusal(["user:*"], "user:bob", set()) is None
    assert first_refusal([], "user:bob", set())[0] == "forbidden_channel"  # type: ignore[index]


@pytest.mark.parametrize("pattern", ["room-*", "group:", "group:a b", "topic:x", 7, "user:" + "x" * 200])
def test_a_pattern_that_cannot_match_a_channel_is_refused(pattern: object) -> None:
    with pytest.raises(BadRequest):
        check_patterns([pattern])


def test_too_many_patterns_are_refused() -> None:
    with pytest.raises(BadRequest):
        check_patterns([f"group:g{n}" for n in range(33)])


def test_duplicate_patterns_are_kept_once() -> None:
    assert check_patterns(["broadcast", "broadcast", "user:*"]) == ("broadcast", "user:*")
