"""How long connections may live: token deadlines and remembered kicks. Pure, no I/O.

``Deadlines`` keeps each connection's next token deadline in a bucket per second, so a
connection costs one set entry however long its token lives, and a disconnect removes
it at once (a heap of deadlines would keep gone connections until their time came).

``KickMemory`` keeps recent kicks (revocations) per user for connections whose token was
checked before a kick arrived: such a connection is refused when it joins the node.
"""

from __future__ import annotations

import heapq
from collections import deque

from herald.services.push.protocol import CLOSE_REVOKED, CLOSE_TRY_LATER
from herald.services.push.readers import Reader

# How long kicks are remembered for handshakes in flight: longer than a token check, the
# app's limits and the presence write may take together (each bounded by seconds).
KICKS_KEPT_S = 60.0
# Kicks remembered at most; past it the oldest are forgotten, and a connection checked
# before the newest forgotten one is refused with 1013 (retry) rather than let in unsure.
MAX_KICKS = 100_000


class Deadlines:
    def __init__(self) -> None:
        # Removal: ``cancel`` (a disconnect, a refresh) and ``due``; an emptied bucket goes at once.
        self._buckets: dict[int, set[Reader]] = {}
        # A heap of the buckets' seconds: popped when reached, compacted in ``schedule``
        # when emptied buckets leave more than half of it stale.
        self._seconds: list[int] = []

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def schedule(self, reader: Reader, when: float) -> None:
        """``reader``'s next deadline is ``when`` (it had none scheduled)."""
        reader.deadline = when
        second = int(when)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = set()
            heapq.heappush(self._seconds, second)
            if len(self._seconds) > 2 * len(self._buckets) + 64:
                # Seconds whose buckets emptied before they came: drop them all at once.
                self._seconds = list(self._buckets)
                heapq.heapify(self._seconds)
        bucket.add(reader)

    def cancel(self, reader: Reader) -> None:
        if reader.deadline is None:
            return
        second = int(reader.deadline)
        bucket = self._buckets.get(second)
        if bucket is not None:
            bucket.discard(reader)
            if not bucket:
                del self._buckets[second]  # its heap entry goes when reached, or at a compaction
        reader.deadline = None

    def due(self, now: float) -> tuple[list[Reader], float | None]:
        """The connections whose deadline came (now unscheduled), and when the next one of
        the current second comes, if one does."""
        found: list[Reader] = []
        seconds = self._seconds
        while seconds and seconds[0] <= now:
            second = seconds[0]
            bucket = self._buckets.get(second)
            if bucket is None:
                heapq.heappop(seconds)
                continue
            due = [reader for reader in bucket if reader.deadline is not None and reader.deadline <= now]
            for reader in due:
                self.cancel(reader)
            found += due
            rest = self._buckets.get(second)
            if rest:
                return found, min(reader.deadline or now for reader in rest)
            if seconds and seconds[0] == second:
                heapq.heappop(seconds)
        return found, None


class KickMemory:
    """Kicks are kept in arrival order and forgotten after ``KICKS_KEPT_S`` or past
    ``MAX_KICKS``; ``forgotten_until`` is the arrival of the newest kick forgotten, and a
    connection checked at or before it cannot be vouched for (refused with 1013)."""

    def __init__(self) -> None:
        # Bounded: forgotten after KICKS_KEPT_S (``forget_before``, every tick) or past MAX_KICKS.
        self._order: deque[tuple[float, tuple[str, str]]] = deque()
        # A user's entry goes with its last remembered kick (``_forget_oldest``).
        self._by_user: dict[tuple[str, str], deque[tuple[float, str | None]]] = {}
        self.forgotten_until = float("-inf")

    def __len__(self) -> int:
        return len(self._order)

    def remember(self, app_id: str, user_id: str, token_hash: str | None, now: float) -> None:
        key = (app_id, user_id)
        self._order.append((now, key))
        self._by_user.setdefault(key, deque()).append((now, token_hash))
        while len(self._order) > MAX_KICKS:
            self._forget_oldest()

    def refusal(self, app_id: str, user_id: str, token_hash: str, checked_at: float) -> int | None:
        """The close code for a token checked at ``checked_at``, if a kick came since."""
        if checked_at <= self.forgotten_until:
            return CLOSE_TRY_LATER
        for at, kicked in self._by_user.get((app_id, user_id), ()):
            if at >= checked_at and (kicked is None or kicked == token_hash):
                return CLOSE_REVOKED
        return None

    def forget_before(self, when: float) -> None:
        while self._order and self._order[0][0] < when:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        at, key = self._order.popleft()
        kicks = self._by_user[key]
        kicks.popleft()
        if not kicks:
            del self._by_user[key]
        self.forgotten_until = max(self.forgotten_until, at)
