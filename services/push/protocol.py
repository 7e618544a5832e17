"""The WebSocket protocol between push nodes and clients, without any socket.

``parse_client_frame`` turns text from a client into a typed frame or a ``FrameError``
whose code and message become an ``error`` frame; the connection lives on. The server
frames are built here too, so their shape is defined in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from herald.core import codec
from herald.core.errors import BadRequest
from herald.core.model import EVENT_RE, parse_channel

MAX_POSITIONS = 1000

# Close codes (docs/PROTOCOL.md).
CLOSE_DRAINING = 1012
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_LARGE = 1009
CLOSE_TRY_LATER = 1013
CLOSE_TOKEN_EXPIRED = 4001
CLOSE_REVOKED = 4003
CLOSE_SLOW_CONSUMER = 4008
MAX_TOKEN_CHARS = 512


class FrameError(Exception):
    """A frame we cannot take. With ``seq`` (a publish whose seq was readable) the answer is
    a ``reply`` carrying the error; without, an ``error`` frame."""

    def __init__(self, code: str, message: str, seq: Seq | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Ack:
    channel: str
    offset: int


@dataclass(frozen=True, slots=True)
class Resume:
    positions: dict[str, int]


Seq = str | int


@dataclass(frozen=True, slots=True)
class Publish:
    """A client publishing on a channel; answered by a ``reply`` with the same ``seq``."""

    seq: Seq
    channel: str
    event: str
    data: Any


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new token for the same app and user, so the connection outlives the old one."""

    token: str


ClientFrame = Ping | Ack | Resume | Publish | Refresh

MAX_SEQ_CHARS = 64


def _offset(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**63 - 1:
        raise FrameError("invalid_offset", f"{what} must be a non-negative integer")
    return value


def _channel(value: Any) -> str:
    try:
        parse_channel(value)
    except BadRequest as exc:
        raise FrameError("invalid_channel", exc.message) from None
    channel: str = value  # parse_channel accepts only strings
    return channel


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    if isinstance(raw, bytes):
        raise FrameError("binary_frame", "frames are JSON text, not binary")
    try:
        frame = codec.loads(raw)
    except codec.JSONDecodeError:
        raise FrameError("invalid_json", "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError("invalid_frame", "frame must be a JSON object")
    kind = frame.get("type")
    if kind == "ping":
        return Ping()
    if kind == "ack":
        return Ack(_channel(frame.get("channel")), _offset(frame.get("offset"), "offset"))
    if kind == "resume":
        positions = frame.get("positions")
        if not isinstance(positions, dict):
            raise FrameError("invalid_positions", "positions must be an object of channel -> offset")
        if len(positions) > MAX_POSITIONS:
            raise FrameError("invalid_positions", f"at most {MAX_POSITIONS} positions")
        return Resume({_channel(ch): _offset(off, f"position of {ch}") for ch, off in positions.items()})
    if kind == "publish":
        return _publish(frame)
    if kind == "refresh":
        token = frame.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise FrameError("invalid_token", f"a refresh needs a `token`: a string of 1-{MAX_TOKEN_CHARS} characters")
        return Refresh(token)
    if not isinstance(kind, str):
        raise FrameError("invalid_frame", "frame needs a string `type`")
    raise FrameError("unknown_type", f"unknown frame type {kind[:40]!r}")


def _publish(frame: dict[str, Any]) -> Publish:
    seq = frame.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, str | int) or not 0 < len(str(seq)) <= MAX_SEQ_CHARS:
        raise FrameError("invalid_seq", f"a publish needs a `seq`: a string or integer of 1-{MAX_SEQ_CHARS} characters")
    try:
        channel = _channel(frame.get("channel"))
    except FrameError as exc:
        raise FrameError(exc.code, exc.message, seq) from None
    event = frame.get("event")
    if not isinstance(event, str) or not EVENT_RE.fullmatch(event):
        raise FrameError("invalid_event", "`event` is 1-64 characters of letters, digits and _.:/-", seq)
    return Publish(seq, channel, event, frame.get("data"))


def reply_frame(seq: Seq, message_id: str, channel: str, offset: int) -> str:
    return codec.dumps_text({"type": "reply", "seq": seq, "id": message_id, "channel": channel, "offset": offset})


def reply_error_frame(seq: Seq, code: str, message: str) -> str:
    return codec.dumps_text({"type": "reply", "seq": seq, "error": {"code": code, "message": message}})


def welcome_frame(conn_id: str, user_id: str, heartbeat_s: float, positions: dict[str, int]) -> str:
    return codec.dumps_text(
        {
            "type": "welcome",
            "conn_id": conn_id,
            "user_id": user_id,
            "heartbeat_s": heartbeat_s,
            "positions": positions,
        }
    )


def message_frame(wire: dict[str, Any]) -> str:
    """Built once per message per node; the same text goes to every local socket."""
    frame = {
        "type": "message",
        "channel": wire["channel"],
        "offset": wire["offset"],
        "id": wire["id"],
        "event": wire["event"],
        "data": wire["data"],
        "ts": wire["ts"],
    }
    if wire.get("from") is not None:
        frame["from"] = wire["from"]
    return codec.dumps_text(frame)


def error_frame(code: str, message: str) -> str:
    return codec.dumps_text({"type": "error", "code": code, "message": message})


def expiring_frame(in_s: float) -> str:
    """The token runs out in ``in_s`` seconds: send ``refresh`` with a new one, or be closed (4001)."""
    return codec.dumps_text({"type": "expiring", "in_s": round(in_s, 1)})


def refreshed_frame(exp: float) -> str:
    return codec.dumps_text({"type": "refreshed", "exp": exp})


PONG_FRAME = codec.dumps_text({"type": "pong"})
