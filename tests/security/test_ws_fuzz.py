"""A WebSocket protocol fuzzer against a real push node (`herald dev`), with Hypothesis.

Each example opens a connection with a valid token and sends generated frames, some
before the welcome: JSON of wrong types and shapes, huge and negative numbers, deep
nesting, invalid UTF-8, binary frames, fragmented messages with control frames
interleaved, bad opcodes and reserved bits, oversized and fragmented control frames,
client closes. Then a sentinel ``ping`` frame. What must come back:

- for a frame the protocol cannot take, the ``error`` frame (or ``reply`` with an error)
  whose code the protocol's parser gives, and that code is in docs/PROTOCOL.md;
- for a frame that breaks WebSocket itself, a close with a code docs/PROTOCOL.md lists
  (or the client's own code echoed, for a client close);
- nothing else but documented frames, and the sentinel's ``pong`` if nothing closed.

Beside the fuzzed connections, a well-behaved one is pinged after every example and
gets a message at the end; the node's memory (RSS) and connection count return to
where they were. ``HERALD_WS_FUZZ_EXAMPLES`` sets the number of examples (300 by
default, a run of well under a minute; e.g. 5000 for a long run).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.frames import Opcode

from herald.core import codec
from herald.services.push.protocol import Ack, FrameError, Ping, Publish, Refresh, Resume, parse_client_frame
from herald_client import Publisher
from tests.support.edges import metric, rss_bytes, running
from tests.support.procs import Standalone
from tests.support.rawws import ServerFrame, client_frame, read_frame, upgrade
from tests.support.ws import next_frame, open_ws

EXAMPLES = int(os.environ.get("HERALD_WS_FUZZ_EXAMPLES", "300"))
# What each run measured, for the terminal summary (tests/security/conftest.py).
REPORT: list[str] = []
PROTOCOL = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
MAX_FRAME_BYTES = 64 * 1024
READ_S = 5.0


def _documented_close_codes() -> set[int]:
    section = PROTOCOL.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    codes: set[int] = set()
    for line in section.splitlines():
        if line.startswith("| ") and line[2:3].isdigit():
            codes.update(int(code) for code in re.findall(r"\b\d{4}\b", line.split("|")[1]))
    return codes


CLOSE_CODES = _documented_close_codes()


# What a message the protocol's parser takes may still be answered with: an ack beyond
# what was sent or on another's channel, a resume naming others' channels, a refresh with
# a token that is not one (any code for a publish: this token may publish nowhere).
MAY_REFUSE: dict[type, frozenset[str] | None] = {
    Ack: frozenset({"ack_beyond_sent", "forbidden_channel"}),
    Resume: frozenset({"forbidden_channel"}),
    Refresh: frozenset({"invalid_token", "token_mismatch", "auth_unavailable"}),
    Publish: None,
    Ping: frozenset(),
}


@dataclass(frozen=True)
class Answer:
    """What one client message must get: exactly the error ``code``, or maybe one error
    among ``may`` (None: any documented code), and a ``pong`` frame for a ``ping``."""

    code: str | None = None
    may: frozenset[str] | None = frozenset()
    pong: bool = False


@dataclass(frozen=True)
class Sent:
    """Frames for the wire, and the messages they make once reassembled (whose answers
    the protocol's parser tells, when the example runs)."""

    frames: bytes
    messages: tuple[str | bytes, ...] = ()
    pongs: int = 0  # WebSocket pongs owed (answers to our WebSocket pings)
    close: frozenset[int] | None = None  # the close codes allowed, for a fatal frame
    echo: bool = False  # the close is the client's own code, echoed
    # The node may close while the frame is still arriving: the kernel then resets the
    # connection, and the close frame may be lost with it.
    may_reset: bool = False


def _oracle(payload: bytes | str) -> Answer:
    """What the node must answer to this message, by the protocol's own parser."""
    try:
        frame = parse_client_frame(payload)
    except FrameError as exc:
        return Answer(code=exc.code)
    return Answer(may=MAY_REFUSE[type(frame)], pong=isinstance(frame, Ping))


def _matches(errors: list[str], answers: list[Answer]) -> bool:
    """The error codes received, in order, are what the answers allow."""
    pending = list(errors)
    for answer in answers:
        if answer.code is not None:
            if not pending or pending[0] != answer.code:
                return False
            pending.pop(0)
        elif pending and (answer.may is None or pending[0] in answer.may):
            pending.pop(0)
    return not pending


# JSON values of every type, numbers at and past every limit, strings of any Unicode.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["user:fuzz", "user:other", "broadcast", "group:g", "ht_x", "", "x" * 300])
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "ack", "resume", "publish", "refresh", "welcome", "nope"]) | _json},
    optional={
        "channel": _json,
        "offset": st.integers(min_value=-(2**70), max_value=2**70) | _json,
        "positions": st.dictionaries(st.text(max_size=12), _json, max_size=5) | _json,
        "seq": _json,
        "event": _json,
        "data": _json,
        "token": _json,
    },
)


@st.composite
def _json_text(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["shaped", "any", "deep", "huge_number", "not_json"]))
    if kind == "shaped":
        return json.dumps(draw(_shaped))  # the stdlib's: integers past 64 bits too
    if kind == "any":
        return json.dumps(draw(_json))
    if kind == "deep":
        # Around the limits: orjson's 1,024 levels, Python's 1,000 frames of recursion.
        depth = draw(st.sampled_from([255, 256, 999, 1000, 1023, 1024, 1025]) | st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return '{"type":"ack","channel":' + opener * depth + "1" + closer * depth + "}"
    if kind == "huge_number":
        digits = draw(st.integers(min_value=19, max_value=600))
        sign = draw(st.sampled_from(["", "-"]))
        return f'{{"type":"ack","channel":"user:fuzz","offset":{sign}1{"0" * digits}}}'
    return draw(st.sampled_from(["", "{", "nul", "[1,]", "NaN", "1e999", '{"type":"ping"', "\u0000", '"\\ud800"']))


def _text_frame(payload: str) -> Sent:
    return Sent(client_frame(Opcode.TEXT, payload.encode()), (payload,))


def _binary_frame(payload: bytes) -> Sent:
    return Sent(client_frame(Opcode.BINARY, payload), (payload,))


def _ping(payload: bytes) -> Sent:
    return Sent(client_frame(Opcode.PING, payload), pongs=1)


@st.composite
def _fragmented(draw: st.DrawFn) -> Sent:
    """A text or binary message in 2-5 fragments, pings interleaved between them."""
    binary = draw(st.booleans())
    payload = draw(st.binary(max_size=80)) if binary else draw(_json_text()).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=4)))
    parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    frames, pongs = b"", 0
    for index, part in enumerate(parts):
        opcode = (Opcode.BINARY if binary else Opcode.TEXT) if index == 0 else Opcode.CONT
        frames += client_frame(opcode, part, fin=index == len(parts) - 1)
        if index < len(parts) - 1 and draw(st.booleans()):
            frames += client_frame(Opcode.PING, draw(st.binary(max_size=125)))
            pongs += 1
    return Sent(frames, (payload if binary else payload.decode(),), pongs=pongs)


_INVALID_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc3", b"\xe2\x82"]


@st.composite
def _fatal(draw: st.DrawFn) -> Sent:
    """Frames that break WebSocket itself: the node closes, with a documented code."""
    kind = draw(
        st.sampled_from(
            [
                "invalid_utf8",
                "invalid_utf8_fragmented",
                "too_large",
                "fragmented_ping",
                "long_ping",
                "reserved_opcode",
                "reserved_bits",
                "lone_continuation",
                "interleaved_data",
                "client_close",
            ]
        )
    )
    if kind.startswith("invalid_utf8"):
        bad = draw(st.text(max_size=10)).encode() + draw(st.sampled_from(_INVALID_UTF8)) + b"!"
        if kind == "invalid_utf8":
            return Sent(client_frame(Opcode.TEXT, bad), close=frozenset({1007}))
        cut = draw(st.integers(0, len(bad)))
        frames = client_frame(Opcode.TEXT, bad[:cut], fin=False) + client_frame(Opcode.CONT, bad[cut:])
        return Sent(frames, close=frozenset({1007}))
    if kind == "too_large":
        return Sent(client_frame(Opcode.TEXT, b" " * (MAX_FRAME_BYTES + 1)), close=frozenset({1009}), may_reset=True)
    if kind == "fragmented_ping":
        return Sent(client_frame(Opcode.PING, b"x", fin=False), close=frozenset({1002}))
    if kind == "long_ping":
        return Sent(client_frame(Opcode.PING, b"x" * draw(st.integers(126, 1000))), close=frozenset({1002}))
    if kind == "reserved_opcode":
        opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]))
        return Sent(client_frame(opcode, b"{}"), close=frozenset({1002}))
    if kind == "reserved_bits":
        return Sent(client_frame(Opcode.TEXT, b"{}", rsv=draw(st.integers(1, 7))), close=frozenset({1002}))
    if kind == "lone_continuation":
        return Sent(client_frame(Opcode.CONT, b"{}"), close=frozenset({1002}))
    if kind == "interleaved_data":
        frames = client_frame(Opcode.TEXT, b'{"ty', fin=False) + client_frame(Opcode.TEXT, b"{}")
        return Sent(frames, close=frozenset({1002}))
    code = draw(st.sampled_from([1000, 1001, 1003, 3000, 4000, 4999, 999, 1004, 1005, 1006, 1015, 5000]))
    valid = code in (1000, 1001, 1003) or 3000 <= code < 5000
    frames = client_frame(Opcode.CLOSE, struct.pack("!H", code) + b"bye")
    return Sent(frames, close=frozenset({code if valid else 1002}), echo=valid)


_harmless = st.one_of(
    _json_text().map(_text_frame),
    st.binary(max_size=100).map(_binary_frame),
    _fragmented(),
    st.binary(max_size=125).map(_ping),
    st.binary(max_size=125).map(lambda data: Sent(client_frame(Opcode.PONG, data))),
)


@st.composite
def _example(draw: st.DrawFn) -> tuple[bool, list[Sent]]:
    """Whether to send before the welcome, and the frames: harmless ones, maybe one fatal last."""
    frames = draw(st.lists(_harmless, min_size=1, max_size=4))
    if draw(st.integers(0, 3)) == 0:
        frames.append(draw(_fatal()))
    return draw(st.booleans()), frames


SENTINEL = client_frame(Opcode.TEXT, b'{"type":"ping"}')


async def _run(port: int, token: str, before_welcome: bool, sent: list[Sent]) -> None:
    reader, writer = await upgrade(port, token)
    try:
        welcomed = False
        if not before_welcome:
            first = await read_frame(reader, READ_S)
            while first is not None and first.opcode == Opcode.PING:  # the keepalive may come first
                first = await read_frame(reader, READ_S)
            assert first is not None and codec.loads(first.payload)["type"] == "welcome"
            welcomed = True
        for item in sent:
            writer.write(item.frames)
        fatal = next((item for item in sent if item.close is not None), None)
        answers = [_oracle(message) for item in sent for message in item.messages]
        if fatal is None:
            writer.write(SENTINEL)
            answers.append(Answer(pong=True))
        pongs_owed = sum(answer.pong for answer in answers)
        # WebSocket pongs go out when the node flushes what its protocol object produced,
        # which may be after the answers to later messages: wait for both kinds.
        ws_pongs_owed = sum(item.pongs for item in sent)
        errors: list[str] = []
        pongs = text_pongs = 0
        closed: int | None = None
        reset = False
        while fatal is not None or text_pongs < pongs_owed or pongs < ws_pongs_owed:
            try:
                frame = await read_frame(reader, READ_S)
            except ConnectionResetError:
                reset = True
                break
            if frame is None:
                break
            if frame.opcode == Opcode.CLOSE:
                closed = frame.close_code
                break
            if frame.opcode in (Opcode.PONG, Opcode.PING):
                pongs += frame.opcode == Opcode.PONG
                continue
            body = _documented(frame, welcomed)
            welcomed = True
            if body["type"] == "error" or (body["type"] == "reply" and "error" in body):
                errors.append(body["code"] if body["type"] == "error" else body["error"]["code"])
            text_pongs += body["type"] == "pong"
        if fatal is not None and reset and fatal.may_reset:
            return
        assert not reset, "the node reset the connection"
        if fatal is not None:
            assert fatal.close is not None and closed in fatal.close, f"expected a close in {fatal.close}, got {closed}"
            assert fatal.echo or closed in CLOSE_CODES, f"close code {closed} is not in docs/PROTOCOL.md"
            return
        assert closed is None, f"closed with {closed} though every frame was harmless"
        assert _matches(errors, answers), f"error frames {errors}; the protocol says {answers}"
        assert pongs == ws_pongs_owed
    finally:
        writer.close()


def _documented(frame: ServerFrame, welcomed: bool) -> dict:
    """A server text frame: JSON, of a documented type and code; the welcome first."""
    assert frame.opcode == Opcode.TEXT, f"unexpected opcode {frame.opcode}"
    body = codec.loads(frame.payload)
    kind = body["type"]
    assert welcomed or kind == "welcome", f"{kind} came before the welcome"
    assert f'"type":"{kind}"' in PROTOCOL, f"frame type {kind} is not in docs/PROTOCOL.md"
    code = body.get("code") or (body.get("error") or {}).get("code")
    if code is not None:
        assert f"`{code}`" in PROTOCOL, f"error code {code} is not in docs/PROTOCOL.md"
    return body


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    env = {"HERALD_LOG_LEVEL": "WARNING", "HERALD_HEARTBEAT_S": "5", "HERALD_CLIENT_FRAMES_PER_S": "1000"}
    with running(tmp_path_factory.mktemp("wsfuzz"), env) as herald:
        yield herald


async def test_generated_frames_get_documented_answers_and_the_node_keeps_serving(
    standalone: Standalone, publisher: Publisher
) -> None:
    port = standalone.port_base + 4
    token = await publisher.token("fuzz")
    steady = await open_ws(standalone.ws_url, await publisher.token("steady"), how="header")
    await next_frame(steady, "welcome")
    pid = standalone.process.process.pid  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()

    # Warm up (the node's first connections build caches and pools), then measure.
    for _ in range(30):
        await _run(port, token, False, [_text_frame('{"type":"nope"}')])
    connections = await metric(standalone, "herald_push_connections")
    rss_before = rss_bytes(pid)
    failures: list[BaseException] = []
    calls = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_example())
    def one(example: tuple[bool, list[Sent]]) -> None:
        nonlocal calls
        calls += 1
        future = asyncio.run_coroutine_threadsafe(_run(port, token, *example), loop)
        try:
            future.result(timeout=30)
        finally:
            steady_check = asyncio.run_coroutine_threadsafe(_steady_pong(steady), loop)
            steady_check.result(timeout=10)

    try:
        await loop.run_in_executor(None, one)
    except BaseException as exc:  # Hypothesis's falsifying example, re-raised below with context
        failures.append(exc)
    if failures:
        raise failures[0]

    await publisher.send(["steady"], "after.fuzz", {"ok": True})
    assert (await next_frame(steady, "message"))["data"] == {"ok": True}
    await steady.close()
    await asyncio.sleep(1.0)  # the fuzzed connections' ends are processed
    assert await metric(standalone, "herald_push_connections") <= connections
    grown = rss_bytes(pid) - rss_before
    REPORT.append(
        f"ws fuzz: {calls} examples, node RSS {rss_before / 2**20:.1f} -> {(rss_before + grown) / 2**20:.1f} MiB,"
        f" connections {connections:g} -> {await metric(standalone, 'herald_push_connections'):g}"
    )
    assert grown < 24 * 1024 * 1024, f"the node's memory grew by {grown / 2**20:.1f} MiB over {EXAMPLES} examples"


async def _steady_pong(steady: ClientConnection) -> None:
    await steady.send('{"type":"ping"}')
    assert (await next_frame(steady, "pong", timeout_s=5))["type"] == "pong"
