"""What the delivery core decides, as plain data for the node to carry out.

The order of the fields is the order they are carried out in (``services.push.outlet``):
writes, closes, routes, then the reads that depend on those routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from herald.core.model import Delivery
from herald.services.push.readers import ChannelKey, Reader
from herald.services.push.sequencing import ChannelSequence, Wire


@dataclass(frozen=True, slots=True)
class Read:
    """A store read for one connection's channel: offsets after ``after``. ``sequence`` is
    the start it serves: a page for a sequence since dropped (a leave) is not applied."""

    reader: Reader
    channel: str
    after: int
    sequence: ChannelSequence


@dataclass(slots=True)
class Decisions:
    """What the node must do, in this order: write, close, write routes, then read."""

    writes: dict[Reader, list[bytes]] = field(default_factory=dict)  # framed bytes, in order
    closes: list[tuple[Reader, int, str]] = field(default_factory=list)
    routes: list[ChannelKey] = field(default_factory=list)  # reader counts to write before the reads
    reads: list[Read] = field(default_factory=list)
    acks: list[tuple[Reader, str, int]] = field(default_factory=list)  # to record (receipts)
    deliveries: list[Delivery] = field(default_factory=list)  # inbox writes (receipts)
    delivered: int = 0  # messages written, all connections counted
    accepted_ms: list[int] = field(default_factory=list)  # each live message with local readers, once
    wake_at: float | None = None  # the core wants a ``tick`` by then (a hole's grace, a token deadline)
    traced: list[tuple[Reader, str, int, str]] = field(default_factory=list)  # (reader, channel, offset, id)

    def append(self, reader: Reader, framed: bytes) -> None:
        chunks = self.writes.get(reader)
        if chunks is None:
            self.writes[reader] = [framed]
        else:
            chunks.append(framed)

    def write(self, reader: Reader, channel: str, messages: list[Wire], framed: bytes, now: float) -> None:
        """Messages framed together for one reader of ``channel``."""
        self.append(reader, framed)
        self.delivered += len(messages)
        # Per-device delivery records for inboxes only: a group message to ten thousand
        # members would otherwise write ten thousand records.
        if channel[0] == "u":
            app, conn, device = reader.app_id, reader.conn_id, reader.device
            for message in messages:
                self.deliveries.append(Delivery(message["id"], app, channel, message["offset"], conn, device, now))

    def wake(self, at: float) -> None:
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at
