"""WebSocket frames built once and written to many sockets.

A server's frames are not masked, and with no extension negotiated (push nodes turn
compression off) a message's frame is the same bytes for every connection. Building it
once per message instead of once per socket, as ``websockets.broadcast`` does, is what
makes group fan-out cheap; ``tests/unit/test_framing.py`` checks the bytes against the
library's own serializer.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
FIN = 0x80


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8), per RFC 6455 section 5.2."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", FIN | OP_TEXT, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", FIN | OP_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", FIN | OP_TEXT, 127, length)
    return header + payload
