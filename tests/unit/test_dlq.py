"""How `herald dlq` shows dead letters, and what it refuses before reaching any server."""

from __future__ import annotations

import pytest

from herald.adapters.bus.base import DeadLetter, retry_step
from herald.core import codec, retries
from herald.core.dead_letters import describe, message_ids
from herald.core.errors import ConfigError
from herald.core.settings import Settings
from herald.ops import dlq

NOW_MS = 1_767_225_600_000


def test_an_empty_dead_letter_queue_says_so() -> None:
    assert dlq.render([], NOW_MS) == "No dead letters."


def test_each_dead_letter_is_a_row_with_the_ids_inside() -> None:
    body = codec.encode_batch([{"id": "msg-1"}, {"id": "msg-2"}])
    letter = DeadLetter("abc123", "dispatch", "delivery_limit", 21, NOW_MS - 240_000, body)

    lines = dlq.render([dlq.Row.of(letter)], NOW_MS).splitlines()

    assert lines[0] == "1 dead letter"
    assert lines[1].split() == ["id", "queue", "reason", "deliveries", "parked", "bytes", "about"]
    assert lines[2].split()[:4] == ["abc123", "dispatch", "delivery_limit", "21"]
    assert lines[2].endswith("msg-1, msg-2")
    assert "4 min ago" in lines[2]


@pytest.mark.parametrize("action", ["replay", "drop"])
async def test_replay_and_drop_want_ids_or_all(action: str) -> None:
    with pytest.raises(ConfigError, match="--all"):
        await dlq.run(Settings.from_env("standalone", {}), action, [], False, 100, dlq.DEV_DISPATCH_URL, "t")


def test_what_a_dead_letter_is_about_for_each_queue() -> None:
    retry = retries.encode(retries.Retry(3, "d-1", codec.dumps({"type": "user.online", "app_id": "a"})))

    assert message_ids("dispatch", codec.encode_batch([{"id": "m"}])) == ["m"]
    assert message_ids("retries", retry) == ["user.online delivery d-1 (attempt 3)"]
    assert message_ids("legacy:dispatch", codec.encode_batch([{"id": "m"}])) == ["m"]
    assert describe("dispatch", b"\x00garbage") == "unreadable, 8 bytes: '\\x00garbage'"


def test_a_retry_waits_in_the_shortest_step_long_enough() -> None:
    assert [retry_step(d) for d in (0.1, 0.5, 0.6, 3.0, 8.0, 1000.0)] == [0.5, 0.5, 1.0, 4.0, 8.0, 64.0]
