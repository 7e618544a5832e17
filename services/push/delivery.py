"""The push node's delivery core: every decision about what a connection is sent, no I/O.

Built the way websockets splits its sans-I/O ``protocol.py`` from its asyncio connection:
the node feeds events in (bus messages, joins, leaves and kicks, a client's resume, ack,
refresh and clean close, store pages, the clock) and takes the decisions out with
``take()``: frames to write per connection, store reads to make, channel routes to write
before those reads, acks and deliveries to record, connections to close and why. The
node (``services.push.node``) only carries them out, so every guarantee below lives here
and is tested with plain data (tests/unit/test_delivery_core.py, and the properties in
tests/unit/test_delivery_properties.py):

- **Order, no gaps, no duplicates per channel**: ``herald.services.push.sequencing``
  decides, per connection and channel, what goes out now and what waits or is read.
- **Membership bounds reading.** A member reads ``group:<name>`` after the offset they
  joined at, until they leave; after a rejoin, after the new join. Every start position
  (stored cursor, resume, join) is raised to that bound, so a late member never reads
  the group's past and a rejoin skips what was sent while the user was out.
- **A connection lives no longer than its token.** ``expiring`` goes out about
  ``EXPIRING_LEAD_S`` before exp (half the remaining lifetime for short tokens); a
  ``refresh`` with a token of the same app and user moves exp; at exp the connection is
  closed with 4001.
- **Revocations reach handshakes in flight.** A kick is remembered for ``KICKS_KEPT_S``:
  a connection whose token was checked before a kick of its token (or user) arrived is
  refused when it joins, so a handshake that passed its check just before a revoke and
  registers just after it is closed all the same.
- **Acks cover at most what was sent** on that connection and channel; a higher offset is
  clamped and answered with an ``error`` frame. A clean close hands the node this
  connection's acks to persist before the close is answered (``closing``).
- **Bounded**: more than ``MAX_HELD`` messages waiting on one channel, or an output
  buffer over its bound (the node says ``overflowed``), closes the connection with 4008;
  it resumes later. Every map here has its removal path in ``remove``.

Times (``now``) are wall-clock epoch seconds, comparable with messages' ``ts`` and tokens' exp.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from herald.core.model import BROADCAST, group_channel
from herald.services.push.decisions import Decisions, Read
from herald.services.push.framing import text_frame
from herald.services.push.handshake import Identity
from herald.services.push.lifetimes import KICKS_KEPT_S, Deadlines, KickMemory
from herald.services.push.protocol import (
    CLOSE_REVOKED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    error_frame,
    expiring_frame,
    message_frame,
    refreshed_frame,
)
from herald.services.push.readers import ChannelKey, Reader, ReaderIndex
from herald.services.push.sequencing import HOLE_GRACE_S, Step, Wire, contiguous_runs

# How long before its token's exp a connection is told to refresh; a token with less than
# twice this left is warned at half its remaining lifetime.
EXPIRING_LEAD_S = 30.0


class DeliveryCore:
    def __init__(self) -> None:
        self.readers = ReaderIndex()
        self.kicks = KickMemory()
        self.deadlines = Deadlines()
        self.trace = False  # record each write in ``Decisions.traced`` (DEBUG logs)
        self._out = Decisions()
        # (reader, channel) pairs with a gap waiting: read after HOLE_GRACE_S, settled by ``tick``.
        # Removal: ``tick`` once the gap is filled or given up (HOLE_WAIT_S), ``remove`` and ``leave``.
        self._holes: set[tuple[Reader, str]] = set()

    def take(self) -> Decisions:
        """The decisions made since the last call."""
        out, self._out = self._out, Decisions()
        return out

    def sizes(self) -> dict[str, int]:
        """Entries in every structure: after churn, what a fresh node would hold."""
        return {
            **self.readers.sizes(),
            "holes": len(self._holes),
            "deadlines": len(self.deadlines),
            "kicks": len(self.kicks),
        }

    # Connections --------------------------------------------------------------------

    def add(self, reader: Reader, checked_at: float, now: float) -> bool:
        """A connection whose token was checked at ``checked_at`` joins the node. False (and
        a close decision) if it must not: a kick of its token or user arrived since the
        check, or its token expired meanwhile."""
        refusal = self.kicks.refusal(reader.app_id, reader.user_id, reader.token_hash, checked_at)
        if refusal is not None:
            self._close(reader, refusal, "revoked" if refusal == CLOSE_REVOKED else "reconnect later")
            return False
        if reader.expires_at <= now:
            self._close(reader, CLOSE_TOKEN_EXPIRED, "token expired")
            return False
        self.readers.add(reader)
        self._schedule_token(reader, now)
        return True

    def remove(self, reader: Reader) -> list[ChannelKey]:
        """Forget a connection that is gone; the shared channels whose reader count changed."""
        reader.closing = True
        for channel in reader.sequences:
            self._holes.discard((reader, channel))
        self.deadlines.cancel(reader)
        return self.readers.remove(reader)

    def load_groups(self, reader: Reader, groups: Mapping[str, int]) -> list[ChannelKey]:
        """The user's memberships as read from the store at connect (group name -> the offset
        they joined after), less those a leave received meanwhile undid; the channels it
        newly reads, whose routes must be written."""
        joined = []
        for group, after in groups.items():
            channel = group_channel(group)
            if channel in reader.groups or reader.has_left_early(channel):
                continue
            self.readers.subscribe(reader, channel, after)
            joined.append((reader.app_id, channel))
        return joined

    def positions(self, reader: Reader, cursors: Mapping[str, int], heads: Mapping[str, int]) -> dict[str, int]:
        """Where each channel starts when the client sends no ``resume``: its acknowledged
        position; for the broadcast without one, the present; for a group, never before
        the join."""
        inbox = reader.user_channel
        positions = {inbox: cursors.get(inbox, 0), BROADCAST: cursors.get(BROADCAST, heads.get(BROADCAST, 0))}
        for channel, bound in reader.groups.items():
            positions[channel] = max(bound, cursors.get(channel, 0))
        return positions

    def readable(self, reader: Reader, positions: Mapping[str, int]) -> dict[str, int]:
        """The resume positions this connection may use, each raised to its membership bound;
        the others are answered with an ``error`` frame."""
        refused = sorted(channel for channel in positions if not reader.may_read(channel))
        if refused:
            self._send(reader, error_frame("forbidden_channel", f"not your channels: {', '.join(refused[:5])}"))
        return {
            channel: max(offset, reader.bound(channel))
            for channel, offset in positions.items()
            if reader.may_read(channel)
        }

    def start(self, reader: Reader, positions: Mapping[str, int], heads: Mapping[str, int], now: float) -> None:
        """Start every channel after its position (``positions`` wins over a join that arrived
        meanwhile). ``heads``, read after the connection's routes were written, spare the
        store reads of channels already at their head."""
        pending = reader.pending_starts()
        starts = {**pending, **positions}
        if not reader.routed:
            heads = {}
        # A join that arrived meanwhile may have written its route after the heads were read.
        heads = {channel: head for channel, head in heads.items() if channel not in pending}
        reader.early = None
        reader.started = True
        for channel, position in starts.items():
            if reader.may_read(channel):
                self._start_channel(reader, channel, max(position, reader.bound(channel)), heads.get(channel), now)

    def resume(self, reader: Reader, positions: Mapping[str, int], now: float) -> None:
        """A ``resume`` after the start: those channels start again from the given positions."""
        for channel, position in self.readable(reader, positions).items():
            self._start_channel(reader, channel, position, None, now)

    def catch_up(self, now: float) -> None:
        """Read every started channel of every connection after what it was sent: what was
        dispatched while this node could not be routed to arrives now, in order."""
        for reader in self.readers:
            for channel, sequence in list(reader.sequences.items()):
                if sequence.started and not sequence.fetching and not reader.closing:
                    self._step(reader, channel, sequence.start(sequence.sent, now), {}, now)

    def overflowed(self, reader: Reader) -> None:
        """The connection's unsent output passed its bound: it must resume later."""
        self._close(reader, CLOSE_SLOW_CONSUMER, "slow consumer: resume later")

    # Client frames ------------------------------------------------------------------

    def ack(self, reader: Reader, channel: str, offset: int) -> None:
        """A cumulative ack, clamped to what this connection was sent on the channel."""
        if not reader.may_read(channel):
            self._send(reader, error_frame("forbidden_channel", f"{channel} is not one of your channels"))
            return
        sent = reader.sent(channel)
        if offset > sent:
            message = f"{channel} was sent up to offset {sent} on this connection; acknowledged up to {sent}"
            self._send(reader, error_frame("ack_beyond_sent", message))
            offset = sent
        if reader.acked is None:
            reader.acked = {}
        if offset > reader.acked.get(channel, 0):
            reader.acked[channel] = offset
            self._out.acks.append((reader, channel, offset))

    def refresh(
        self, reader: Reader, identity: Identity | None, token_hash: str, checked_at: float, now: float
    ) -> None:
        """A ``refresh`` whose token auth answered for (None: not active). The connection is
        unchanged unless the token is valid, for the same app and user, and not revoked
        since its check."""
        if reader.closing:
            return
        revoked = self.kicks.refusal(reader.app_id, reader.user_id, token_hash, checked_at) is not None
        if identity is None or identity.expires_at <= now or revoked:
            self._send(reader, error_frame("invalid_token", "the new token is unknown, revoked or expired"))
            return
        if (identity.app_id, identity.user_id) != (reader.app_id, reader.user_id):
            self._send(reader, error_frame("token_mismatch", "the new token is for another app or user"))
            return
        reader.token_hash = token_hash
        reader.expires_at = identity.expires_at
        reader.publish = identity.publish
        self.deadlines.cancel(reader)
        self._schedule_token(reader, now)
        self._send(reader, refreshed_frame(identity.expires_at))

    def closing(self, reader: Reader) -> dict[str, int]:
        """The client closed cleanly: nothing more is written to it; its acks, to persist
        before the close is answered, so they hold for its next connection on any node."""
        reader.closing = True
        return dict(reader.acked or {})

    # Bus side -----------------------------------------------------------------------

    def messages(self, messages: Iterable[Wire], now: float) -> None:
        """Live messages to their local readers. A run of consecutive offsets on one channel
        is framed once and written to each caught-up reader in one piece; a reader that is
        not caught up (starting, or missing an offset) goes through its sequence."""
        frames: dict[str, bytes] = {}
        for run in contiguous_runs(messages):
            first = run[0]
            channel = first["channel"]
            readers: Collection[Reader]
            if channel.startswith("user:"):
                readers = self.readers.of_user(first["app"], channel[5:])
            else:
                readers = self.readers.readers(first["app"], channel)
            if not readers:
                continue
            self._out.accepted_ms.extend([message["ts"] for message in run])
            framed = b""
            low, high = first["offset"], run[-1]["offset"]
            for reader in readers:
                if reader.closing:
                    continue
                sequence = reader.sequences.get(channel)
                if sequence is not None and sequence.take_run(low, high):
                    if not framed:
                        framed = b"".join([self._frame(message, frames) for message in run])
                    self._write(reader, channel, run, framed, now)
                else:
                    sequence = reader.sequence(channel)
                    for message in run:
                        self._step(reader, channel, sequence.live(message, now), frames, now)

    def join(self, app_id: str, user_id: str, channel: str, after: int, now: float) -> None:
        """The user's live connections start reading a group after ``after``. Its route is
        written (``Decisions.routes``) before its backlog is read: a message dispatched
        before the route existed is in the store by then, one dispatched after arrives live."""
        joining = False
        for reader in self.readers.of_user(app_id, user_id):
            if reader.closing or channel in reader.groups:
                continue
            joining = True
            self.readers.subscribe(reader, channel, after)
            if reader.started:
                self._start_channel(reader, channel, after, None, now)
            else:
                reader.joined_early(channel, after)
        if joining:
            self._out.routes.append((app_id, channel))

    def leave(self, app_id: str, user_id: str, channel: str) -> None:
        leaving = False
        for reader in self.readers.of_user(app_id, user_id):
            if channel in reader.groups:
                leaving = True
                self._holes.discard((reader, channel))
                self.readers.unsubscribe(reader, channel)
            if not reader.started:
                reader.left_early(channel)
        if leaving:
            self._out.routes.append((app_id, channel))

    def kick(self, app_id: str, user_id: str, token_hash: str | None, reason: str, now: float) -> None:
        """Close the user's connections using that token (all, for None) with 4003, and
        remember it for the handshakes checked before it arrived."""
        self.kicks.remember(app_id, user_id, token_hash, now)
        for reader in self.readers.of_user(app_id, user_id):
            if token_hash is None or token_hash == reader.token_hash:
                self._close(reader, CLOSE_REVOKED, reason or "kicked")

    # Store and clock ----------------------------------------------------------------

    def fetched(self, read: Read, page: list[Wire], now: float) -> None:
        """A store page for ``read`` (ascending, after ``read.after``)."""
        reader = read.reader
        if reader.closing or reader.sequences.get(read.channel) is not read.sequence:
            return  # the connection is gone, or left the channel since
        self._step(reader, read.channel, read.sequence.fetched(page, now), {}, now)

    def tick(self, now: float) -> None:
        """Read the store for gaps past their grace, give up on gaps that will never fill,
        warn and close connections at their token deadlines, forget old kicks."""
        for reader, channel in list(self._holes):
            sequence = reader.sequences.get(channel)
            if sequence is None or sequence.hole_since is None or reader.closing:
                self._holes.discard((reader, channel))
                continue
            if now - sequence.hole_since < HOLE_GRACE_S:
                self._out.wake(sequence.hole_since + HOLE_GRACE_S)
            self._step(reader, channel, sequence.tick(now), {}, now)
        while True:  # a warning that came late schedules an expiry that may be due too
            due, rest_at = self.deadlines.due(now)
            for reader in due:
                self._deadline(reader, now)
            if not due:
                break
        if rest_at is not None:
            self._out.wake(rest_at)
        self.kicks.forget_before(now - KICKS_KEPT_S)

    # Inside -------------------------------------------------------------------------

    def _start_channel(self, reader: Reader, channel: str, position: int, head: int | None, now: float) -> None:
        self._step(reader, channel, reader.sequence(channel).start(position, now, head), {}, now)

    def _step(self, reader: Reader, channel: str, step: Step, frames: dict[str, bytes], now: float) -> None:
        """Carry a sequencing step into decisions: write, read the store, or close."""
        if reader.closing:
            return
        if step.overflow:
            self._close(reader, CLOSE_SLOW_CONSUMER, "slow consumer: resume later")
            return
        if step.write:
            framed = b"".join([self._frame(message, frames) for message in step.write])
            self._write(reader, channel, step.write, framed, now)
        sequence = reader.sequences[channel]
        if step.fetch_after is not None:
            self._out.reads.append(Read(reader, channel, step.fetch_after, sequence))
        if sequence.hole_since is not None and (reader, channel) not in self._holes:
            self._holes.add((reader, channel))
            self._out.wake(sequence.hole_since + HOLE_GRACE_S)

    @staticmethod
    def _frame(message: Wire, frames: dict[str, bytes]) -> bytes:
        """The message's frame, built once per delivery for all its readers."""
        frame = frames.get(message["id"])
        if frame is None:
            frame = frames[message["id"]] = text_frame(message_frame(message).encode())
        return frame

    def _write(self, reader: Reader, channel: str, messages: list[Wire], framed: bytes, now: float) -> None:
        self._out.write(reader, channel, messages, framed, now)
        if self.trace:
            self._out.traced.extend((reader, channel, message["offset"], message["id"]) for message in messages)

    def _send(self, reader: Reader, text: str) -> None:
        """A control frame (error, expiring, refreshed), in order with the messages."""
        if not reader.closing:
            self._out.append(reader, text_frame(text.encode()))

    def _close(self, reader: Reader, code: int, reason: str) -> None:
        if reader.closing:
            return
        reader.closing = True
        self._out.closes.append((reader, code, reason))

    # Token lifetimes ------------------------------------------------------------------

    def _schedule_token(self, reader: Reader, now: float) -> None:
        if reader.expires_at == float("inf"):
            return
        lead = min(EXPIRING_LEAD_S, (reader.expires_at - now) / 2)
        reader.warned = False
        self._schedule(reader, reader.expires_at - lead)

    def _schedule(self, reader: Reader, when: float) -> None:
        self.deadlines.schedule(reader, when)
        self._out.wake(when)

    def _deadline(self, reader: Reader, now: float) -> None:
        if reader.closing:
            return
        if not reader.warned:
            reader.warned = True
            self._send(reader, expiring_frame(max(0.0, reader.expires_at - now)))
            self._schedule(reader, reader.expires_at)
        else:
            self._close(reader, CLOSE_TOKEN_EXPIRED, "token expired")
