"""How long delivery stopped around a fault: the longest wait between two consecutive
messages reaching any subscriber, against the same measure before the fault."""

from __future__ import annotations

import itertools

from tests.support.traffic import Audience


def longest_gap(audience: Audience, after: float, before: float | None = None) -> float:
    """Seconds of the longest interval without any message arriving, from ``after`` (a
    monotonic time) to ``before`` (or the last arrival)."""
    arrivals = sorted(t for frames in audience.received.values() for _, t in frames if t >= after)
    if before is not None:
        arrivals = [t for t in arrivals if t <= before]
    if not arrivals:
        return float("inf")
    return max([arrivals[0] - after, *(b - a for a, b in itertools.pairwise(arrivals))])


def duplicates_reaching_the_app(audience: Audience) -> int:
    """Frames the application saw twice (the subscribers already drop repeats by offset:
    this counts what got past them)."""
    return sum(len(frames) - len({offset for offset, _ in frames}) for frames in audience.received.values())
