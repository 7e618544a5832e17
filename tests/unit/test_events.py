"""Topic matching as RabbitMQ does it: the in-process bus must route events the same way."""

from __future__ import annotations

import pytest

from herald.messaging import events


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        ("app_1.user.online", "app_1.user.online"),
        ("*.user.online", "app_1.user.online"),
        ("app_1.*.*", "app_1.group.joined"),
        ("*.*.*", "app_1.message.acked"),
        ("#", "app_1.user.online"),
        ("#", "single"),
        ("#", ""),
        ("app_1.#", "app_1.user.online"),
        ("app_1.#", "app_1"),
        ("#.online", "app_1.user.online"),
        ("#.online", "online"),
        ("app_1.#.online", "app_1.online"),
        ("app_1.#.online", "app_1.user.x.online"),
        ("#.user.#", "app_1.user.offline"),
        ("#.#", "a.b.c"),
        ("*.#", "a"),
    ],
)
def test_matching_keys(pattern: str, key: str) -> None:
    assert events.topic_matches(pattern, key)


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        ("app_1.user.online", "app_1.user.offline"),
        ("app_1.user.online", "app_2.user.online"),
        ("*.user.online", "user.online"),
        ("*", "app_1.user"),
        ("app_1.*", "app_1.user.online"),
        ("app_1.*", "app_1"),
        ("app_1.#", "app_10.user.online"),
        ("app_1.#", "app_2.user.online"),
        ("#.online", "app_1.user.offline"),
        ("app_1.#.online", "app_1.online.x"),
        ("app_1.user", "app_1.user.online"),
    ],
)
def test_other_keys(pattern: str, key: str) -> None:
    assert not events.topic_matches(pattern, key)


def test_an_events_routing_key_is_app_then_type() -> None:
    value = events.event(events.USER_ONLINE, "app_1", user_id="u7")

    key = events.routing_key(value)

    assert key == "app_1.user.online"
    assert events.topic_matches("app_1.#", key)
    assert events.topic_matches("*.user.*", key)
    assert not events.topic_matches("*.group.*", key)


def test_every_event_type_is_two_words_under_its_app() -> None:
    # The documented patterns (``*.user.*``) rely on it: ``*`` is exactly one word.
    for kind in events.TYPES:
        assert events.topic_matches("*.*.*", events.routing_key(events.event(kind, "app_1")))


# RabbitMQ reads an empty key as no words: '*' and '*.#' miss it (checked on RabbitMQ 3.10).
@pytest.mark.parametrize("pattern", ["*", "*.#"])
def test_an_empty_key_has_no_words(pattern: str) -> None:
    assert not events.topic_matches(pattern, "")


def test_an_empty_key_matches_a_lone_hash() -> None:
    assert events.topic_matches("#", "")
