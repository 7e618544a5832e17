"""Frames built once must be byte for byte what websockets would have written."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from herald.services.push.framing import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
def test_a_text_frame_matches_the_librarys_unmasked_serialization(size: int) -> None:
    payload = b"x" * size

    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
