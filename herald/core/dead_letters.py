"""What a dead letter is about, for logs and ``herald dlq``: the Herald ids inside a body.

A dead-lettered bus message is one body of a work queue (``WorkQueues``): a dispatch
batch (message ids), a receipts batch (the ids of the messages it reports) or a webhook
retry (the delivery id and event type). A body that cannot be read, which is often why it
was dead-lettered, is described by its size and first bytes instead.
"""

from __future__ import annotations

from typing import Any

from herald.core import codec, receipts, retries

PREVIEW_BYTES = 60


def message_ids(queue: str, body: bytes) -> list[str]:
    """The ids inside ``body`` of a message from ``queue`` (a label: dispatch, receipts,
    retries); empty when it cannot be read."""
    try:
        if queue.endswith("dispatch"):
            return [str(message["id"]) for message in codec.decode_batch(body)]
        if queue.endswith("receipts"):
            batch = receipts.decode(body)
            return list(dict.fromkeys(delivery.message_id for delivery in batch.deliveries))
        if queue.endswith("retries"):
            retry = retries.decode(body)
            event: Any = codec.loads(retry.body)
            kind = event.get("type", "?") if isinstance(event, dict) else "?"
            return [f"{kind} delivery {retry.delivery_id} (attempt {retry.attempt})"]
    except (ValueError, KeyError, TypeError):
        return []
    return []


def describe(queue: str, body: bytes) -> str:
    """One line for a log or a table: the ids, or what the unreadable body looks like."""
    ids = message_ids(queue, body)
    if ids:
        shown = ", ".join(ids[:5])
        return shown if len(ids) <= 5 else f"{shown} and {len(ids) - 5} more"
    preview = body[:PREVIEW_BYTES].decode("utf-8", errors="replace").replace("\n", " ")
    more = "..." if len(body) > PREVIEW_BYTES else ""
    return f"unreadable, {len(body)} bytes: {preview!r}{more}"
