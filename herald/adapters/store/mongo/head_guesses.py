"""The offset counters' values this process last saw, as guesses for the next compare-and-set.

Raising many counters by compare-and-set (``offsets.py``) costs two round trips: read
the heads, then write ``{_id, n: head} -> $inc`` for each. When one collect process
writes a channel's messages, the head it would read is the value it last wrote, so the
read can be skipped: the conditional write with the guessed head either matches (the
guess was right) or fails with a duplicate key like any lost race, and only the
counters it lost go round again with a read. A wrong guess costs a round, never an
offset: the filter matches only a counter still at the guessed value, and counters
only grow.

Where other processes write the same counters (several collect replicas, push nodes'
publishers), guesses go stale and a lost round costs more than the read saved. So
guessing stops while more than ``LOSS_RATE_LIMIT`` of recent guessed rounds lost a
counter, and one round in ``PROBE_EVERY`` still guesses to notice when that changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Above this share of guessed rounds losing a counter, a read first is cheaper.
LOSS_RATE_LIMIT = 0.25
# While guessing is off, one round in this many still guesses, to see whether it pays again.
PROBE_EVERY = 16
# Weight of the newest guessed round in the loss rate (an exponential moving average).
LOSS_RATE_WEIGHT = 0.1
# Counters remembered; past this the memory is dropped whole (guesses are only an optimisation).
MAX_KNOWN = 100_000


class HeadGuesses:
    def __init__(self, max_known: int = MAX_KNOWN) -> None:
        self._known: dict[str, int] = {}
        self._max_known = max_known
        self._loss_rate = 0.0
        self._declined = 0

    def __len__(self) -> int:
        """Counters remembered."""
        return len(self._known)

    def guess(self, counter_ids: Sequence[str]) -> list[int] | None:
        """The heads to write against without reading, in order; ``None`` when a read
        must come first (a counter not seen, or guesses losing too often lately)."""
        known = self._known
        heads = [known.get(counter_id, -1) for counter_id in counter_ids]
        if -1 in heads:
            return None
        if self._loss_rate > LOSS_RATE_LIMIT:
            self._declined += 1
            if self._declined % PROBE_EVERY:
                return None
        return heads

    def settled(self, lost_any: bool) -> None:
        """How a round written against guesses ended."""
        self._loss_rate += LOSS_RATE_WEIGHT * ((1.0 if lost_any else 0.0) - self._loss_rate)

    def saw(self, counter_id: str, value: int) -> None:
        """``value`` is what the counter held after this process's write."""
        if len(self._known) >= self._max_known and counter_id not in self._known:
            self._known.clear()
        self._known[counter_id] = value

    def forget(self, counter_ids: Iterable[str]) -> None:
        for counter_id in counter_ids:
            self._known.pop(counter_id, None)
