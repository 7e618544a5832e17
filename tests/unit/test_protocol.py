import pytest

from herald.core import codec
from herald.services.push.protocol import (
    Ack,
    FrameError,
    Ping,
    Publish,
    Resume,
    message_frame,
    parse_client_frame,
    welcome_frame,
)


def _code(raw: str | bytes) -> str:
    with pytest.raises(FrameError) as info:
        parse_client_frame(raw)
    return info.value.code


def test_ping() -> None:
    assert parse_client_frame('{"type":"ping"}') == Ping()


def test_ack_names_a_channel_and_an_offset() -> None:
    assert parse_client_frame('{"type":"ack","channel":"user:7","offset":41}') == Ack("user:7", 41)


def test_resume_carries_positions_per_channel() -> None:
    frame = parse_client_frame('{"type":"resume","positions":{"user:7":41,"group:ops":9}}')
    assert frame == Resume({"user:7": 41, "group:ops": 9})


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_frame"),
        ('{"no":"type"}', "invalid_frame"),
        ('{"type":"launch"}', "unknown_type"),
        ('{"type":"ack","channel":"user:7","offset":-1}', "invalid_offset"),
        ('{"type":"ack","channel":"user:7","offset":true}', "invalid_offset"),
        ('{"type":"ack","channel":"user:7","offset":"3"}', "invalid_offset"),
        ('{"type":"ack","channel":"nowhere","offset":3}', "invalid_channel"),
        ('{"type":"resume","positions":[1]}', "invalid_positions"),
        ('{"type":"resume","positions":{"user:7":1.5}}', "invalid_offset"),
        (b"\x00\x01", "binary_frame"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(raw: str | bytes, code: str) -> None:
    assert _code(raw) == code


def test_message_frame_has_the_documented_fields() -> None:
    wire = {"id": "m1", "app": "a", "channel": "user:7", "offset": 3, "event": "e", "data": {"k": 1}, "ts": 5}
    assert codec.loads(message_frame(wire)) == {
        "type": "message",
        "channel": "user:7",
        "offset": 3,
        "id": "m1",
        "event": "e",
        "data": {"k": 1},
        "ts": 5,
    }


def test_welcome_frame_has_the_documented_fields() -> None:
    frame = codec.loads(welcome_frame("c1", "7", 10.0, {"user:7": 4}))
    assert frame == {
        "type": "welcome",
        "conn_id": "c1",
        "user_id": "7",
        "heartbeat_s": 10.0,
        "positions": {"user:7": 4},
    }


def test_a_publish_frame_is_parsed_with_its_seq() -> None:
    frame = parse_client_frame('{"type":"publish","seq":"17","channel":"group:room-1","event":"chat","data":{"t":1}}')
    assert frame == Publish("17", "group:room-1", "chat", {"t": 1})


def test_an_integer_seq_is_kept_as_given() -> None:
    assert parse_client_frame('{"type":"publish","seq":17,"channel":"user:7","event":"e"}').seq == 17  # type: ignore[union-attr]


def test_a_publish_without_seq_is_a_plain_frame_error() -> None:
    with pytest.raises(FrameError) as refused:
        parse_client_frame('{"type":"publish","channel":"user:7","event":"e"}')
    assert (refused.value.code, refused.value.seq) == ("invalid_seq", None)


def test_a_publish_with_a_bad_channel_is_refused_with_its_seq() -> None:
    with pytest.raises(FrameError) as refused:
        parse_client_frame('{"type":"publish","seq":"9","channel":"topic:x","event":"e"}')
    assert (refused.value.code, refused.value.seq) == ("invalid_channel", "9")


def test_a_publish_with_a_bad_event_is_refused_with_its_seq() -> None:
    with pytest.raises(FrameError) as refused:
        parse_client_frame('{"type":"publish","seq":"9","channel":"user:7","event":"no spaces"}')
    assert (refused.value.code, refused.value.seq) == ("invalid_event", "9")


def test_a_message_frame_carries_its_sender_when_a_client_published_it() -> None:
    wire = {"id": "m", "channel": "group:g", "offset": 3, "event": "chat", "data": None, "ts": 1}
    assert "from" not in codec.loads(message_frame(wire))
    sender = {"user_id": "ann", "conn_id": "c1"}
    assert codec.loads(message_frame({**wire, "from": sender}))["from"] == sender


def test_a_channel_nested_a_thousand_deep_is_an_invalid_channel_not_a_crash() -> None:
    """Found by the WebSocket fuzzer (tests/security): the refusal's details once held
    repr(channel), and repr of a list nested 1,000 deep raised RecursionError in the
    socket's callback, cutting the connection without a close."""
    raw = '{"type":"ack","offset":1,"channel":' + "[" * 1000 + "]" * 1000 + "}"
    with pytest.raises(FrameError) as refused:
        parse_client_frame(raw)
    assert refused.value.code == "invalid_channel"
