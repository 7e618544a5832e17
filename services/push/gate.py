"""Admission at accept: how many sockets a node holds, and how long a handshake may last.

A socket costs a file descriptor and memory from accept on, before a single byte proves
it is a client. Without bounds, 300 sockets that each trickle one header line every few
seconds hold a node's resources for as long as they like. So, counted from accept:

- a **deadline** (``handshake_timeout_s``): a socket not answered by then (upgraded, or
  refused) is dropped, however many bytes it trickled meanwhile;
- a **node-wide cap** on sockets still in their handshake (``max_handshakes``): past it the
  *oldest* of them is dropped to make room, never the newcomer. A real handshake lasts
  milliseconds, so the oldest is the slowest: a flood of slow sockets churns itself out
  while real users still get in at once;
- a **per-address cap** (``max_handshakes_per_address``) on handshakes being read at once
  from one source address; more sockets from that address wait their turn with their
  reads paused (the deadline still runs), so one address cannot occupy the node's
  handshake capacity, and a reconnect storm from behind one NAT is slowed, not refused.
  Waiting costs the node a few KB and no CPU, and it holds the attacker's socket too: a
  flood of made-up tokens from a few addresses slows to the pace the node sets
  (bench/abuse.py, 2,000 concurrent bad-token loops: real users' handshake p99 at
  1.3-2.0x the baseline with 16 at a time per address, 2.1-2.4x with 64 and evictions,
  docs/BENCHMARKS.md);
- a **connection cap** (``max_connections``) on every socket the node holds: past it a
  newcomer is answered 503 at once and closed.

Pure bookkeeping, no I/O: keys are whatever the server uses for a socket; the server
acts on what the gate returns (abort, pause, resume).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class GateLimits:
    handshake_timeout_s: float = 10.0
    max_handshakes: int = 4000
    max_handshakes_per_address: int = 16
    max_connections: int = 50_000


@dataclass(slots=True)
class Admission(Generic[K]):
    """What to do with a newcomer: ``refused`` (a code) and nothing else, or admitted and
    either read at once or ``wait`` (reads paused until ``HandshakeGate.done`` resumes it);
    ``evicted`` are older handshakes to drop to make room, and ``resumed`` sockets whose
    turn came as those left."""

    refused: str | None = None
    wait: bool = False
    evicted: list[K] = field(default_factory=list)
    resumed: list[K] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    address: str
    accepted_at: float
    reading: bool


class HandshakeGate(Generic[K]):
    def __init__(self, limits: GateLimits) -> None:
        self.limits = limits
        # Every socket still in its handshake, in accept order: the oldest first, which is
        # both the first to reach its deadline and the first to go when the node is full.
        self._pending: OrderedDict[K, _Pending] = OrderedDict()
        self._reading: dict[str, int] = {}  # per address: handshakes being read
        self._waiting: dict[str, deque[K]] = {}  # per address: sockets waiting their turn

    def __len__(self) -> int:
        return len(self._pending)

    def reading(self, address: str) -> int:
        return self._reading.get(address, 0)

    def admit(self, key: K, address: str, held: int, now: float) -> Admission[K]:
        """A socket was just accepted; ``held`` is how many the node holds besides it."""
        if held >= self.limits.max_connections:
            return Admission(refused="node_full")
        admission: Admission[K] = Admission()
        while len(self._pending) >= self.limits.max_handshakes:
            oldest = next(iter(self._pending))
            turn = self.done(oldest)
            admission.evicted.append(oldest)
            if turn is not None:
                admission.resumed.append(turn)
        reading = self._reading.get(address, 0) < self.limits.max_handshakes_per_address
        self._pending[key] = _Pending(address, now, reading)
        if reading:
            self._reading[address] = self._reading.get(address, 0) + 1
        else:
            self._waiting.setdefault(address, deque()).append(key)
            admission.wait = True
        return admission

    def done(self, key: K) -> K | None:
        """``key`` left its handshake (answered, or gone): forget it. Returns the socket of
        the same address whose turn it now is (to resume reading), if one waits."""
        entry = self._pending.pop(key, None)
        if entry is None:
            return None
        address = entry.address
        if not entry.reading:
            waiting = self._waiting.get(address)
            if waiting is not None:
                waiting.remove(key)
                if not waiting:
                    del self._waiting[address]
            return None
        waiting = self._waiting.get(address)
        if waiting:
            turn = waiting.popleft()
            if not waiting:
                del self._waiting[address]
            self._pending[turn].reading = True
            return turn
        left = self._reading[address] - 1
        if left:
            self._reading[address] = left
        else:
            del self._reading[address]
        return None

    def expired(self, now: float) -> list[K]:
        """The sockets whose handshake outlived the deadline (still pending: ``done`` is
        called for each when its connection is lost)."""
        deadline = now - self.limits.handshake_timeout_s
        late: list[K] = []
        for key, entry in self._pending.items():
            if entry.accepted_at > deadline:
                break
            late.append(key)
        return late
