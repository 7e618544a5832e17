"""Receipts: what push nodes report about delivery, batched onto the bus for dispatch to store.

A node writes thousands of frames a second; recording each one in the store from the node
would put a store round trip on the hot path. Instead the node collects deliveries (one
per message per connection) and acks (highest offset per connection and channel) and
publishes them as one bus message about once a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from herald.core import codec
from herald.core.model import Delivery


@dataclass(frozen=True, slots=True)
class AckReport:
    app_id: str
    user_id: str
    conn_id: str
    positions: dict[str, int]
    at: float


@dataclass(slots=True)
class ReceiptBatch:
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[AckReport] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.deliveries or self.acks)


def encode(batch: ReceiptBatch) -> bytes:
    return codec.dumps(
        {
            "deliveries": [
                [d.message_id, d.app_id, d.channel, d.offset, d.conn_id, d.device, d.delivered_at]
                for d in batch.deliveries
            ],
            "acks": [[a.app_id, a.user_id, a.conn_id, a.positions, a.at] for a in batch.acks],
        }
    )


def decode(body: bytes) -> ReceiptBatch:
    """Raises ValueError (or KeyError/TypeError) on a body no node could have written."""
    value: Any = codec.loads(body)
    return ReceiptBatch(
        deliveries=[
            Delivery(m, app, ch, int(off), conn, dev, float(at))
            for m, app, ch, off, conn, dev, at in value["deliveries"]
        ],
        acks=[
            AckReport(app, user, conn, {str(c): int(o) for c, o in pos.items()}, float(at))
            for app, user, conn, pos, at in value["acks"]
        ],
    )
