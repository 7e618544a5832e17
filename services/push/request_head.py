"""A whole HTTP request head read in one pass, for the shape nearly every handshake has.

websockets' sans-I/O parser reads a request a line at a time through generator-based
coroutines (``Request.parse``, ``parse_headers``, ``parse_line``, the reader's
``read_line``): eight generator steps and two regular expressions per header line, 28.5 µs
for a browser's 13 header lines (15 µs here). A browser's or a client library's handshake
arrives whole in one segment, and ``parse_head`` reads it with a few splits into the same
``Request`` websockets would build, checking what websockets checks (the request line,
each header's name and value, the limits, no body). Anything else, a head split across
segments, a bare LF, an over-long line, a body, anything websockets would refuse or
answer with an error, gets ``None`` and goes to websockets' own parser, so every refusal
keeps websockets' status and wording (``tests/unit/test_push_request_head.py`` compares
the two on generated requests).
"""

from __future__ import annotations

import re

from websockets.datastructures import Headers
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request

_PROTOCOLS = (b"HTTP/1.1", b"HTTP/1.0")
# Header lines as websockets accepts them (its ``_token_re`` name, a colon, its
# ``_value_re`` value, CRLF), all of them checked in one match: no CR or LF inside a line.
_HEADER_LINES = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[\x09\x20-\x7e\x80-\xff]*\r\n)*")


def parse_head(data: bytes) -> tuple[Request, bytes] | None:
    """The request ``data`` starts with and the bytes after its head, when websockets would
    read the same request from it without a complaint; otherwise None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    first = data.find(b"\r\n")
    request_line = data[:first]
    block = data[first + 2 : end + 2]  # every header line with its CRLF
    if len(request_line) + 2 > MAX_LINE_LENGTH or b"\r" in request_line or b"\n" in request_line:
        return None
    parts = request_line.split(b" ", 2)
    if len(parts) != 3 or parts[2] not in _PROTOCOLS or not (parts[0].isascii() and parts[1].isascii()):
        return None
    if not _HEADER_LINES.fullmatch(block):
        return None
    lines = block.split(b"\r\n")
    lines.pop()  # after the last CRLF
    if len(lines) > MAX_NUM_HEADERS or (lines and max(map(len, lines)) + 2 > MAX_LINE_LENGTH):
        return None
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.decode("ascii")] = value.strip(b" \t").decode("iso-8859-1")
    if "Transfer-Encoding" in headers or not set(headers.get_all("Content-Length")) <= {"0"}:
        return None
    method, path, protocol = (part.decode("ascii") for part in parts)
    return Request(path, headers, method, protocol), data[end + 4 :]
