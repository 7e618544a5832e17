"""RabbitMQ's faults worth retrying, and channels opened and closed in those terms."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
)

from herald.core.errors import Unavailable

# The faults worth retrying, and only those:
# - AMQPConnectionError: refused, lost or closed connection (ConnectionClosed and
#   the handshake failures are subclasses);
# - ChannelInvalidStateError: the channel closed under us;
# - ChannelNotFoundEntity: an exchange or queue vanished; declaring again brings it back;
# - DeliveryError: the broker nacked a publish, or returned it as unroutable
#   (PublishError, a subclass);
# - ConnectionError: socket-level failures aio-pika lets through;
# - TimeoutError (= asyncio.TimeoutError): no answer within our bound.
# A precondition failure (a queue declared with other arguments) or an access refusal is
# a deployment mistake, not an outage, and surfaces as itself.
RETRYABLE: tuple[type[BaseException], ...] = (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    ConnectionError,
    TimeoutError,
)

OPERATION_TIMEOUT_S = 5.0


async def open_channel(connection: AbstractConnection, **options: Any) -> AbstractChannel:
    """A new channel; a connection that dropped a moment ago is ``Unavailable``, not a bug
    (aiormq raises RuntimeError for a closed connection)."""
    options.setdefault("publisher_confirms", False)
    try:
        return await connection.channel(**options)
    except RuntimeError as exc:
        raise Unavailable(f"RabbitMQ unavailable: {exc}") from exc


async def close_quietly(channel: AbstractChannel | None) -> None:
    if channel is None or channel.is_closed:
        return
    with contextlib.suppress(*RETRYABLE, RuntimeError):
        await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)
