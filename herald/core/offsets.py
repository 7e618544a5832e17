"""Offset allocation plans: pure arithmetic around one atomic counter per channel.

A request for k messages on a channel asks the store to add k to the channel's counter
once (``$inc`` by k) and gets the new value ``last`` back; its messages take
``last-k+1 .. last`` in request order. One round trip per channel, however large the
batch, and two concurrent requests can never share an offset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence


def count_per_channel(channels: Sequence[str]) -> dict[str, int]:
    """How many offsets each channel needs, keeping first-seen order (stable store calls)."""
    return dict(Counter(channels))


def assign_offsets(channels: Sequence[str], last_by_channel: Mapping[str, int]) -> list[int]:
    """Offsets for ``channels`` (one per message, in order) from each channel's allocated range."""
    counts = count_per_channel(channels)
    next_by_channel = {ch: last_by_channel[ch] - n + 1 for ch, n in counts.items()}
    offsets = []
    for channel in channels:
        offsets.append(next_by_channel[channel])
        next_by_channel[channel] += 1
    return offsets
