"""An upgraded socket lets its HTTP request go: an idle connection does not carry its
handshake's headers (and the token in them) for its whole life (issue 16, memory)."""

from __future__ import annotations

import weakref
from typing import Any

from herald.services.push.socket import Socket
from tests.unit.test_push_churn import UPGRADE, _no_subprotocol, _Transport

# A masked text frame from the client: "hi" (mask 0, so the payload reads as is).
CLIENT_HI = b"\x81\x82\x00\x00\x00\x00hi"


class _Upgrading:
    """Upgrades every request, keeps only a weak reference to it, and the frames it gets."""

    def __init__(self) -> None:
        self.seen: weakref.ref[Any] | None = None
        self.messages: list[str | bytes] = []

    def accepted(self, sock: Any) -> None: ...

    def request(self, sock: Any, request: Any) -> None:
        self.seen = weakref.ref(request)
        sock.respond(sock.protocol.accept(request))

    def message(self, sock: Any, data: str | bytes) -> None:
        self.messages.append(data)

    def closing(self, sock: Any) -> bool:
        return False

    def lost(self, sock: Any) -> None: ...


def _open(events: _Upgrading, *received: bytes) -> Socket:
    sock = Socket(events, 65536, _no_subprotocol)
    sock.connection_made(_Transport())  # type: ignore[arg-type]
    for data in received:
        sock.data_received(data)
    return sock


def test_an_open_connection_holds_no_reference_to_its_request(no_collector: None) -> None:
    events = _Upgrading()

    sock = _open(events, UPGRADE)

    assert events.seen is not None and events.seen() is None
    assert sock.protocol.state.name == "OPEN"


def test_frames_after_the_upgrade_are_parsed_as_before() -> None:
    events = _Upgrading()

    _open(events, UPGRADE, CLIENT_HI[:3], CLIENT_HI[3:], CLIENT_HI)

    assert events.messages == ["hi", "hi"]


def test_a_frame_sent_with_the_request_is_not_lost() -> None:
    events = _Upgrading()

    _open(events, UPGRADE + CLIENT_HI)

    assert events.messages == ["hi"]
