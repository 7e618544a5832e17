"""A whole HTTP request head read in one pass, for the shape nearly every handshake has.

websockets' sans-I/O parser reads a request a line at a time through generator-based
coroutines (``Request.parse``, ``parse_headers``, ``parse_line``, the reader's
``read_line``): eight generator steps and two regular expressions per header line, about
a tenth of a push node's CPU per handshake. A browser's or a client library's handshake
arrives whole in one segment, and ``parse_head`` reads it with a few splits into the same
``Request`` websockets would build, checking what websockets checks (the request line,
each header's name and value, the limits, no body). Anything else, a head split across
segments, a bare LF, an over-long line, a body, anything websockets would refuse or
answer with an error, gets ``None`` and goes to websockets' own parser, so every refusal
keeps websockets' status and wording (``tests/unit/test_push_request_head.py`` compares
the two on generated requests).
"""

from __future__ import annotations

from websockets.datastructures import Headers
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request, _token_re, _value_re

_PROTOCOLS = (b"HTTP/1.1", b"HTTP/1.0")


def parse_head(data: bytes) -> tuple[Request, bytes] | None:
    """The request ``data`` starts with and the bytes after its head, when websockets would
    read the same request from it without a complaint; otherwise None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    lines = head.split(b"\r\n")
    if len(lines) > MAX_NUM_HEADERS + 1 or b"\n" in head.replace(b"\r\n", b""):
        return None
    request_line = lines[0]
    if len(request_line) + 2 > MAX_LINE_LENGTH:
        return None
    parts = request_line.split(b" ", 2)
    if len(parts) != 3 or parts[2] not in _PROTOCOLS or not (parts[0].isascii() and parts[1].isascii()):
        return None
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or len(line) + 2 > MAX_LINE_LENGTH or not _token_re.fullmatch(name):
            return None
        value = value.strip(b" \t")
        if not _value_re.fullmatch(value):
            return None
        headers[name.decode("ascii")] = value.decode("iso-8859-1")
    if "Transfer-Encoding" in headers or not set(headers.get_all("Content-Length")) <= {"0"}:
        return None
    method, path, protocol = (part.decode("ascii") for part in parts)
    return Request(path, headers, method, protocol), data[end + 4 :]
