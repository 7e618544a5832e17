"""JSON in and out, compact and fast (orjson), the same everywhere.

Bus bodies carry a batch: ``{"messages": [wire message, ...]}``. One AMQP message costs
about as much as many small deliveries, so nothing on the bus carries a single message
on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from herald.errors import BadRequest

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(raw)


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON: what payload limits are measured in."""
    try:
        return len(orjson.dumps(value))
    except TypeError as exc:
        raise BadRequest(f"not JSON-serialisable: {exc}", code="invalid_data") from None


def encode_batch(messages: Iterable[dict[str, Any]]) -> bytes:
    return orjson.dumps({"messages": list(messages)})


def decode_batch(body: bytes) -> list[dict[str, Any]]:
    """Decode a bus body; a malformed one is a bug upstream, so it raises rather than guessing."""
    value = orjson.loads(body)
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(messages, list):
        raise ValueError("bus body without a messages list")
    return messages
