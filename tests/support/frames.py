"""Read back what a push node wrote: unmasked server frames, as JSON objects."""

from __future__ import annotations

from typing import Any

from herald.core import codec


def decode_frames(data: bytes) -> list[dict[str, Any]]:
    """The text frames in ``data`` (server frames: unmasked, no extension), decoded."""
    frames = []
    while data:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        frames.append(codec.loads(data[start : start + length]))
        data = data[start + length :]
    return frames
