"""The webhook retry envelope: an event's exact bytes plus what a later attempt needs.

A retry waits in RabbitMQ (``Bus.publish_retry``), not in the process that failed, so the
envelope carries everything: which attempt comes next, the delivery id the receiver
de-duplicates on, and the event's bytes untouched (the signature covers them). Layout:
one line of compact JSON (``{"attempt": 2, "delivery": "..."}``), a newline, the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from herald.core import codec


@dataclass(frozen=True, slots=True)
class Retry:
    attempt: int  # the attempt this envelope is for (2 = the first retry)
    delivery_id: str
    body: bytes


def encode(retry: Retry) -> bytes:
    return codec.dumps({"attempt": retry.attempt, "delivery": retry.delivery_id}) + b"\n" + retry.body


def decode(envelope: bytes) -> Retry:
    """Raises ValueError on bytes that no sender wrote."""
    head, newline, body = envelope.partition(b"\n")
    if not newline:
        raise ValueError("a retry envelope without its header line")
    value: Any = codec.loads(head)
    if not isinstance(value, dict):
        raise ValueError("a retry envelope whose header is not an object")
    attempt, delivery = value.get("attempt"), value.get("delivery")
    if not isinstance(attempt, int) or attempt < 1 or not isinstance(delivery, str) or not delivery:
        raise ValueError("a retry envelope without attempt or delivery id")
    return Retry(attempt, delivery, body)
