"""What one connection must be sent next on one channel: the seam between backlog and live.

Pure decisions, no I/O: the push node feeds in live messages, store pages and clock
ticks; a ``ChannelSequence`` answers with the messages to write now, in offset order,
and whether to read the store. The rules:

- Nothing is written at or below ``sent`` (the highest offset written): no duplicates.
- A message is written only when every offset before it was written, or is known
  not to exist: no gaps, no reordering. Live messages that arrive early are held.
- Missing offsets are read from the store, after ``HOLE_GRACE_S``: a message that overtook
  its predecessor (two requests racing to the bus) almost always sees it arrive live
  within milliseconds, and on a shared channel every reader would otherwise read the store
  at the same moment. An offset the store does not have either is
  still being written by a concurrent request (it will arrive live within the store's
  timeout) or never will be (its write failed, or it expired). After ``HOLE_WAIT_S`` and
  one last read it is skipped; at once if the message after it was accepted more than
  ``HOLE_WAIT_S`` ago, since offsets are allocated before a message's ``ts`` is taken,
  so the request that held the missing one has long finished.

Times (``now``) are wall-clock epoch seconds, comparable with messages' ``ts``.
- Until the connection's starting position is known (the client may still send
  ``resume``), live messages are held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Wire = dict[str, Any]

# Longer than a store write may take (HERALD_STORE_TIMEOUT_S defaults to 3 s), so a
# concurrent insert is never mistaken for a hole.
HOLE_WAIT_S = 5.0
# How long a gap may wait for its message to arrive live before the store is read for it.
HOLE_GRACE_S = 0.05
# Messages held per channel before the connection is closed as a slow consumer.
MAX_HELD = 5_000
# Messages read from the store at a time during a catch-up.
PAGE = 500


# What a sequence holds when it holds nothing, shared by all of them (never written to:
# a sequence takes a dict of its own for its first held message). An idle connection's
# two sequences would otherwise cost an empty dict each.
_EMPTY: dict[int, Wire] = {}


@dataclass(slots=True)
class Step:
    write: list[Wire] = field(default_factory=list)
    fetch_after: int | None = None  # read the store for offsets after this one
    overflow: bool = False  # too much held: close the connection, it resumes later


class ChannelSequence:
    __slots__ = ("_final_read", "_held", "_hole_read", "fetching", "hole_since", "sent", "started")

    def __init__(self) -> None:
        self.sent = 0
        self.started = False
        self.fetching = False
        self.hole_since: float | None = None
        self._hole_read = False  # the store was read for the current hole
        self._final_read = False
        self._held: dict[int, Wire] = _EMPTY

    @property
    def held(self) -> int:
        return len(self._held)

    def start(self, position: int, now: float, head: int | None = None) -> Step:
        """Begin after ``position``: read the backlog, then release what was held meanwhile.

        ``head`` is the channel's last allocated offset, read after this connection's route
        was written: whatever is allocated later arrives live. At or past it there is no
        backlog, so the store is not read (unless held messages show a gap).
        """
        self.sent = position
        self.started = True
        if self._held:
            self._held = {offset: m for offset, m in self._held.items() if offset > position} or _EMPTY
        if head is not None and position >= head:
            self.fetching = False
            return self._advance(now)
        return self._fetch(now, final=False)

    def live(self, message: Wire, now: float) -> Step:
        offset = message["offset"]
        if offset <= self.sent or offset in self._held:
            return Step()
        if self._held is _EMPTY:
            self._held = {}
        self._held[offset] = message
        if len(self._held) > MAX_HELD:
            return Step(overflow=True)
        if not self.started or self.fetching:
            return Step()
        return self._advance(now)

    def take_run(self, first: int, last: int) -> bool:
        """The fast path of ``live`` for the contiguous offsets ``first..last``: when the
        sequence is caught up (started, nothing held, not reading the store, ``first`` next)
        they can all be written at once, and are counted as sent. Otherwise False, and the
        caller feeds them to ``live`` one by one."""
        if self.sent != first - 1 or self._held or self.fetching or not self.started:
            return False
        self.sent = last
        return True

    def fetched(self, page: list[Wire], now: float) -> Step:
        """A store page (ascending, after the requested offset, at most ``PAGE`` long)."""
        self.fetching = False
        for message in page:
            if message["offset"] > self.sent:
                if self._held is _EMPTY:
                    self._held = {}
                self._held.setdefault(message["offset"], message)
        step = self._advance(now, after_read=True)
        if len(self._held) > MAX_HELD:
            return Step(write=step.write, overflow=True)
        if len(page) >= PAGE and step.fetch_after is None:
            more = self._fetch(now, final=False)
            step.fetch_after = more.fetch_after
        return step

    def tick(self, now: float) -> Step:
        """Called now and then: reads the store for a hole that outlived ``HOLE_GRACE_S``,
        and gives up on one that outlived ``HOLE_WAIT_S``."""
        if self.fetching or self.hole_since is None:
            return Step()
        waited = now - self.hole_since
        if waited >= HOLE_WAIT_S:
            return self._fetch(now, final=True)
        if waited >= HOLE_GRACE_S and not self._hole_read:
            self._hole_read = True
            return self._fetch(now, final=False)
        return Step()

    def _fetch(self, now: float, *, final: bool) -> Step:
        self.fetching = True
        self._final_read = final
        return Step(fetch_after=self.sent)

    def _advance(self, now: float, *, after_read: bool = False) -> Step:
        step = Step(write=self._release())
        if not self._held:
            self._held = _EMPTY  # the dict that held them is let go
            self.hole_since = None
            return step
        if after_read and (self._final_read or self._settled_gap(now)):
            # The store does not have the missing offsets and never will: skip them.
            self.sent = min(self._held) - 1
            self.hole_since = None
            step.write.extend(self._release())
            if not self._held:
                return step
            # Another gap behind the skipped one: what was released so far goes first.
            rest = self._advance(now)
            rest.write[:0] = step.write
            return rest
        if self.hole_since is None:
            # A new hole: the store is read for it at the first tick after HOLE_GRACE_S,
            # unless its message arrives live before (it usually does).
            self.hole_since = now
            self._hole_read = after_read
        return step

    def _settled_gap(self, now: float) -> bool:
        """Whether the message after the gap is old enough that nothing can still fill it."""
        accepted_ms = self._held[min(self._held)].get("ts")
        return isinstance(accepted_ms, int | float) and accepted_ms / 1000 < now - HOLE_WAIT_S

    def _release(self) -> list[Wire]:
        out = []
        while (self.sent + 1) in self._held:
            self.sent += 1
            out.append(self._held.pop(self.sent))
        return out


def contiguous_runs(messages: Iterable[Wire]) -> list[list[Wire]]:
    """Split a batch into runs of consecutive offsets on one app's channel, keeping order:
    the unit that can be framed once and written to a caught-up reader in one write."""
    runs: list[list[Wire]] = []
    for message in messages:
        if runs:
            last = runs[-1][-1]
            if (
                last["channel"] == message["channel"]
                and last["app"] == message["app"]
                and last["offset"] + 1 == message["offset"]
            ):
                runs[-1].append(message)
                continue
        runs.append([message])
    return runs
