"""Properties of the delivery core over random interleavings (Hypothesis, stateful).

A small world: one app, three users, one group, the broadcast; two push nodes (two
cores), so a user may reconnect to the other node; a store holding every message, the
memberships and the acknowledged cursors; per-node bus queues that may reorder messages
(between commands, which keep their order), and route a message only to nodes that
had a reader of its channel when it was published (as dispatch does); store reads
answered late (a group's page applied only behind a barrier through the node's queue,
as the node does); a clock. Rules publish, join, leave, kick, connect
(with any resume positions), ack any offset, close cleanly or abruptly, refresh tokens,
deliver, read and tick in any order. After every step:

- a connection received each channel's offsets once each, in increasing order;
- every group offset it received was allocated while its user was a member, and after
  the position it started from;
- no ack recorded beyond what the connection was sent on that channel;
- no open connection holds more than the buffer bound, nor outlives its token;
- what a clean close acknowledged never comes back to the user's next connections;
and once everything in flight has arrived and the gaps have settled, every open
connection has every unexpired offset it is entitled to.

A few hundred examples run in the suite; ``HERALD_PROPERTY_EXAMPLES=5000`` runs more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from herald.services.push import sequencing
from herald.services.push.decisions import Read
from herald.services.push.delivery import DeliveryCore
from herald.services.push.handshake import Identity
from herald.services.push.readers import Reader
from tests.support.frames import decode_frames

APP = "app"
USERS = ("u0", "u1", "u2")
GROUP = "group:g"
CHANNELS = ("user:u0", "user:u1", "user:u2", GROUP, "broadcast")
START = 1_000_000.0
EXAMPLES = int(os.environ.get("HERALD_PROPERTY_EXAMPLES", "300"))
HELD_BOUND = 4  # the buffer bound, small so that it is reached


@dataclass
class Stored:
    offset: int
    expires_at: float
    members: frozenset[str]  # the group's members when it was allocated (group messages)

    def wire(self, channel: str) -> dict[str, Any]:
        return {
            "id": f"{channel}#{self.offset}",
            "app": APP,
            "channel": channel,
            "offset": self.offset,
            "event": "e",
            "data": None,
            "ts": 0,
        }


@dataclass(eq=False)
class Conn:
    node: int
    reader: Reader
    started: bool = False
    closed: bool = False
    starts: dict[str, int] = field(default_factory=dict)  # where each channel started (the lowest it may get)
    received: dict[str, list[int]] = field(default_factory=dict)
    sent_high: dict[str, int] = field(default_factory=dict)  # the highest offset written or started after
    heads: dict[str, int] = field(default_factory=dict)
    resume: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    floor: dict[str, int] = field(default_factory=dict)  # what clean closes acked before it connected


class DeliveryWorld(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.now = START
        self.nodes = [DeliveryCore(), DeliveryCore()]
        self.queues: list[list[tuple[str, Any]]] = [[], []]  # per node: ("msg", wire) | ("cmd", (...))
        self.reads: list[tuple[int, Read]] = []
        self.log: dict[str, list[Stored]] = {channel: [] for channel in CHANNELS}
        self.members: dict[str, int] = {}  # user -> joined after
        self.cursors: dict[tuple[str, str], int] = {}
        self.receipts: list[tuple[str, str, int]] = []  # acks on their way to the store
        self.clean_acks: dict[tuple[str, str], int] = {}  # the highest acked then closed cleanly
        self.conns: list[Conn] = []
        self.serial = 0

    # The business system -------------------------------------------------------------

    @rule(
        channel=st.sampled_from(CHANNELS),
        count=st.integers(1, 3),
        ttl=st.sampled_from([3600.0, 3600.0, 3600.0, 2.0]),
    )
    def publish(self, channel: str, count: int, ttl: float) -> None:
        for _ in range(count):
            stored = Stored(len(self.log[channel]) + 1, self.now + ttl, frozenset(self.members))
            self.log[channel].append(stored)
            for core, queue in zip(self.nodes, self.queues, strict=True):
                if channel.startswith("user:"):
                    routed = bool(core.readers.of_user(APP, channel[5:]))
                else:
                    routed = bool(core.readers.readers(APP, channel))
                if routed:
                    queue.append(("msg", stored.wire(channel)))

    @rule(user=st.sampled_from(USERS))
    def join(self, user: str) -> None:
        if user in self.members:
            return
        after = len(self.log[GROUP])
        self.members[user] = after
        self._command(("join", user, after))

    @rule(user=st.sampled_from(USERS))
    def leave(self, user: str) -> None:
        if self.members.pop(user, None) is not None:
            self._command(("leave", user))

    @rule(user=st.sampled_from(USERS), every_token=st.booleans(), now=st.sampled_from([False, False, False, True]))
    def kick(self, user: str, every_token: bool, now: bool) -> None:
        if not now:  # kicks are rarer than the rest
            return
        live = [c for c in self.conns if c.reader.user_id == user and not c.closed]
        token = None if every_token or not live else live[0].reader.token_hash
        self._command(("kick", user, token))

    def _command(self, command: tuple[Any, ...]) -> None:
        for queue in self.queues:
            queue.append(("cmd", command))

    # Connections ---------------------------------------------------------------------

    @rule(
        node=st.integers(0, 1),
        user=st.sampled_from(USERS),
        lifetime=st.sampled_from([3600.0, 3600.0, 5.0, 40.0]),
        resume=st.dictionaries(st.sampled_from(CHANNELS), st.integers(0, 12), max_size=3),
        start_now=st.booleans(),
    )
    def connect(self, node: int, user: str, lifetime: float, resume: dict[str, int], start_now: bool) -> None:
        self.serial += 1
        reader = Reader(None, f"c{self.serial}", APP, user, None, f"t{self.serial}", self.now + lifetime)
        core = self.nodes[node]
        if not core.add(reader, self.now, self.now):
            self._drain()
            return
        floor = {ch: acked for (u, ch), acked in self.clean_acks.items() if u == user and ch not in resume}
        conn = Conn(node, reader, resume=resume, floor=floor)
        self.conns.append(conn)
        groups = {"g": self.members[user]} if user in self.members else {}
        core.load_groups(reader, groups)
        conn.heads = {ch: len(self.log[ch]) for ch in (reader.user_channel, "broadcast", *reader.groups)}
        cursors = {ch: off for (u, ch), off in self.cursors.items() if u == user}
        conn.positions = core.positions(reader, cursors, conn.heads)
        self._drain()
        if start_now:
            self._start(conn)

    @precondition(lambda self: any(not c.started and not c.closed for c in self.conns))
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        """A connection whose start was delayed (its resume comes late) starts now."""
        self._start(data.draw(st.sampled_from([c for c in self.conns if not c.started and not c.closed])))

    def _start(self, conn: Conn) -> None:
        core, reader = self.nodes[conn.node], conn.reader
        positions = dict(conn.positions)
        positions.update(core.readable(reader, conn.resume))
        conn.started = True
        starts = {**reader.pending_starts(), **positions}
        conn.starts = {ch: max(p, reader.bound(ch)) for ch, p in starts.items() if reader.may_read(ch)}
        conn.sent_high = dict(conn.starts)
        core.start(reader, positions, conn.heads, self.now)
        self._drain()

    @precondition(lambda self: any(c.started and not c.closed for c in self.conns))
    @rule(data=st.data(), channel=st.sampled_from(CHANNELS), beyond=st.sampled_from([0, 0, 1, 2**40]))
    def ack(self, data: st.DataObject, channel: str, beyond: int) -> None:
        conn = data.draw(st.sampled_from([c for c in self.conns if c.started and not c.closed]))
        received = conn.received.get(channel, [])
        offset = (received[-1] if received else conn.starts.get(channel, 0)) + beyond
        self.nodes[conn.node].ack(conn.reader, channel, offset)
        self._drain()

    @precondition(lambda self: any(not c.closed for c in self.conns))
    @rule(data=st.data(), clean=st.booleans(), now=st.sampled_from([False, True]))
    def disconnect(self, data: st.DataObject, clean: bool, now: bool) -> None:
        if not now:
            return
        conn = data.draw(st.sampled_from([c for c in self.conns if not c.closed]))
        core, reader = self.nodes[conn.node], conn.reader
        if clean and conn.started:
            for channel, offset in core.closing(reader).items():
                self._raise_cursor(reader.user_id, channel, offset)
                key = (reader.user_id, channel)
                self.clean_acks[key] = max(self.clean_acks.get(key, 0), offset)
        self._drain()
        conn.closed = True
        core.remove(reader)

    @precondition(lambda self: any(not c.closed for c in self.conns))
    @rule(data=st.data(), valid=st.booleans(), extra=st.sampled_from([10.0, 3600.0]))
    def refresh(self, data: st.DataObject, valid: bool, extra: float) -> None:
        conn = data.draw(st.sampled_from([c for c in self.conns if not c.closed]))
        reader = conn.reader
        self.serial += 1
        identity = Identity(APP, reader.user_id, self.now + extra) if valid else None
        self.nodes[conn.node].refresh(reader, identity, f"t{self.serial}", self.now, self.now)
        self._drain()

    # The machinery -------------------------------------------------------------------

    @precondition(lambda self: any(self.queues))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Any message before the node's next command may come first: racing requests and
        batches reorder them."""
        node = data.draw(st.sampled_from([i for i, queue in enumerate(self.queues) if queue]))
        queue = self.queues[node]
        barrier = next((i for i, (kind, _) in enumerate(queue) if kind != "msg"), len(queue))
        index = data.draw(st.integers(0, max(0, barrier - 1))) if barrier else 0
        kind, item = queue.pop(index)
        self._apply(node, kind, item)
        self._drain()

    def _apply(self, node: int, kind: str, item: Any) -> None:
        core = self.nodes[node]
        if kind == "msg":
            core.messages([item], self.now)
        elif kind == "barrier":
            core.fetched(item[0], item[1], self.now)
        elif item[0] == "join":
            for conn in self.conns:
                reader = conn.reader
                if conn.node == node and reader.user_id == item[1] and conn.started and not conn.closed:
                    if GROUP not in reader.groups:  # a live reader starts the group after the join
                        conn.starts[GROUP] = item[2]
                        conn.sent_high[GROUP] = max(conn.sent_high.get(GROUP, 0), item[2])
            core.join(APP, item[1], GROUP, item[2], self.now)
        elif item[0] == "leave":
            core.leave(APP, item[1], GROUP)
        else:
            core.kick(APP, item[1], item[2], "kicked", self.now)

    @precondition(lambda self: bool(self.reads))
    @rule(data=st.data())
    def serve_read(self, data: st.DataObject) -> None:
        node, read = self.reads.pop(data.draw(st.integers(0, len(self.reads) - 1)))
        self._answer(node, read)

    def _answer(self, node: int, read: Read) -> None:
        """A group's page is applied once a barrier came back through the node's queue
        (``PushNode.barrier``): behind every command queued before the page was read."""
        page = self._page(read)[: sequencing.PAGE]
        if read.channel == GROUP:
            self.queues[node].append(("barrier", (read, page)))
        else:
            self.nodes[node].fetched(read, page, self.now)
            self._drain()

    @precondition(lambda self: bool(self.receipts))
    @rule()
    def store_receipts(self) -> None:
        """Acks reach the store through the receipts queue, later."""
        for user, channel, offset in self.receipts:
            self._raise_cursor(user, channel, offset)
        self.receipts = []

    @rule(seconds=st.sampled_from([0.01, 0.01, 0.06, 0.06, 1.0, 6.0, 20.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        for core in self.nodes:
            core.tick(self.now)
        self._drain()

    def _page(self, read: Read) -> list[dict[str, Any]]:
        """The store's answer: unexpired messages after the position, ascending."""
        log = self.log[read.channel]
        return [s.wire(read.channel) for s in log if s.offset > read.after and s.expires_at > self.now]

    def _raise_cursor(self, user: str, channel: str, offset: int) -> None:
        self.cursors[(user, channel)] = max(self.cursors.get((user, channel), 0), offset)

    def _drain(self) -> None:
        """Take both cores' decisions: record writes, acks and closes; queue their reads."""
        by_reader = {id(c.reader): c for c in self.conns}
        for node, core in enumerate(self.nodes):
            decisions = core.take()
            for reader, chunks in decisions.writes.items():
                conn = by_reader[id(reader)]
                for frame in decode_frames(b"".join(chunks)):
                    if frame["type"] == "message":
                        conn.received.setdefault(frame["channel"], []).append(frame["offset"])
                        ch = frame["channel"]
                        conn.sent_high[ch] = max(conn.sent_high.get(ch, 0), frame["offset"])
            for reader, channel, offset in decisions.acks:
                conn = by_reader[id(reader)]
                assert offset <= conn.sent_high.get(channel, 0), (channel, offset, conn.sent_high)
                self.receipts.append((reader.user_id, channel, offset))
            for reader, _code, _reason in decisions.closes:
                if id(reader) in by_reader:
                    conn = by_reader[id(reader)]
                    if not conn.closed:
                        conn.closed = True
                        core.remove(reader)
            self.reads.extend((node, read) for read in decisions.reads)
            if decisions.reads and decisions.routes:
                pass  # routes are written before reads by the node; nothing to model here

    # Invariants ----------------------------------------------------------------------

    @invariant()
    def each_offset_once_in_order(self) -> None:
        for conn in getattr(self, "conns", []):
            for channel, offsets in conn.received.items():
                assert offsets == sorted(set(offsets)), (channel, offsets)

    @invariant()
    def nothing_before_the_start_nor_outside_membership(self) -> None:
        for conn in getattr(self, "conns", []):
            for channel, offsets in conn.received.items():
                assert channel in (conn.reader.user_channel, GROUP, "broadcast"), channel
                for offset in offsets:
                    if channel == GROUP:
                        assert conn.reader.user_id in self.log[GROUP][offset - 1].members, (offset, conn.reader)
                if channel != GROUP and offsets and channel in conn.starts:
                    assert offsets[0] > conn.starts[channel], (channel, offsets, conn.starts)

    @invariant()
    def what_a_clean_close_acked_never_comes_back(self) -> None:
        for conn in getattr(self, "conns", []):
            for channel, offsets in conn.received.items():
                if offsets:
                    assert offsets[0] > conn.floor.get(channel, 0), (channel, offsets, conn.floor)

    @invariant()
    def within_bounds_and_token_lifetime(self) -> None:
        for conn in getattr(self, "conns", []):
            if conn.closed:
                continue
            assert conn.reader.expires_at > self.now, (conn.reader.expires_at, self.now)
            for sequence in conn.reader.sequences.values():
                assert sequence.held <= HELD_BOUND

    def teardown(self) -> None:
        """Let everything in flight arrive, the gaps settle and the reads be answered, then
        every open connection has every unexpired offset it is entitled to."""
        if not hasattr(self, "nodes"):
            return
        for _ in range(50):
            while any(self.queues) or self.reads:
                for node, queue in enumerate(self.queues):
                    while queue:
                        kind, item = queue.pop(0)
                        self._apply(node, kind, item)
                        self._drain()
                while self.reads:
                    node, read = self.reads.pop(0)
                    self._answer(node, read)
            self.now += 0.5
            for core in self.nodes:
                core.tick(self.now)
            self._drain()
            if not any(self.queues) and not self.reads and self.now > START + 1 and _settled(self.nodes):
                break
        for conn in self.conns:
            if conn.closed or not conn.started:
                continue
            reader = conn.reader
            for channel in (reader.user_channel, "broadcast", *reader.groups):
                low = conn.starts.get(channel)
                if low is None:
                    low = reader.bound(channel)
                low = max(low, reader.bound(channel))
                wanted = [
                    s.offset
                    for s in self.log[channel]
                    if s.offset > low and s.expires_at > self.now and (channel != GROUP or reader.user_id in s.members)
                ]
                got = set(conn.received.get(channel, []))
                missing = [offset for offset in wanted if offset not in got]
                assert not missing, (channel, low, missing, conn.received.get(channel))


def _settled(nodes: list[DeliveryCore]) -> bool:
    return all(
        sequence.hole_since is None and not sequence.fetching
        for core in nodes
        for reader in core.readers
        for sequence in reader.sequences.values()
    )


@pytest.fixture(autouse=True)
def small_buffer_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sequencing, "MAX_HELD", HELD_BOUND)


DeliveryWorld.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_delivery_properties = DeliveryWorld.TestCase
