"""JSON in and out, compact and fast (orjson), the same everywhere.

Bus bodies carry a batch: ``{"messages": [wire message, ...]}``. One AMQP message costs
about as much as many small deliveries, so nothing on the bus carries a single message
on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from herald.core.errors import BadRequest

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


# Bus bodies stay well under RabbitMQ's message size limit (16 MiB by default since 4.0)
# and small enough that one body never stalls a consumer for long.
MAX_BATCH_BYTES = 1024 * 1024


def encode_batches(messages: Iterable[Mapping[str, Any]], max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Encode messages as few bus bodies as fit ``max_bytes`` each (one message may exceed it alone)."""
    bodies: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for message in messages:
        encoded = orjson.dumps(message)
        if chunk and size + len(encoded) + 1 > max_bytes:
            bodies.append(_join(chunk))
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        bodies.append(_join(chunk))
    return bodies


def _join(encoded: list[bytes]) -> bytes:
    return b'{"messages":[' + b",".join(encoded) + b"]}"
