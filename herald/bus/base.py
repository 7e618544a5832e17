"""The bus: queues between services. RabbitMQ for clusters, asyncio queues for standalone.

Four routes:
- the dispatch queue: durable, competing consumers (every dispatch worker), fed by
  collect with publisher confirms;
- the receipts queue: durable, competing consumers (dispatch workers again), fed by push
  nodes with what they delivered and what clients acknowledged;
- one queue per push node, fed by dispatch with the node id as routing key. A node's
  queue disappears some time after its node stops consuming; messages published to a
  node that has no queue are dropped (its users resume from the store on reconnect).

- the events topic exchange: notifications for webhooks and for anyone binding a queue
  (routing keys in ``herald.events``).

Node queues carry two kinds of body: message batches and control batches (join, leave,
kick; ``herald.codec``). Consumers get raw bodies and process them one at a time, in order (so a node writes a
channel's messages in the order dispatch routed them). A handler that returns has its
message acknowledged; one that raises has it rejected and redelivered after a short
pause. Publishes return only once the broker confirmed them and raise
``herald.errors.Unavailable`` when it cannot.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence

Handler = Callable[[bytes], Awaitable[None]]

# How long a rejected message waits before it is offered again: a failing dependency
# (Redis down, say) must not turn a consumer into a busy loop.
REDELIVERY_PAUSE_S = 0.5


class Bus(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Connect and declare the shared topology (exchanges, the dispatch queue)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consumers, then disconnect. Messages in a handler finish first (bounded)."""

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def publish_dispatch(self, body: bytes) -> None:
        """Queue ``body`` for dispatch; returns once the broker confirmed it."""

    @abstractmethod
    async def publish_receipts(self, body: bytes) -> None:
        """Queue a batch of receipts; returns once the broker confirmed it."""

    @abstractmethod
    async def consume_receipts(self, handler: Handler) -> None:
        """Start consuming the receipts queue (competing with other workers); returns at once."""

    @abstractmethod
    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        """Send each body to its node's queue, all confirms awaited together."""

    @abstractmethod
    async def consume_dispatch(self, handler: Handler) -> None:
        """Start consuming the dispatch queue (competing with other workers); returns at once."""

    @abstractmethod
    async def consume_node(self, node_id: str, handler: Handler) -> None:
        """Declare this node's queue and start consuming it; returns at once."""

    @abstractmethod
    async def publish_event(self, routing_key: str, body: bytes) -> None:
        """Publish on the events topic exchange (keys: ``herald.events``); confirmed.

        Events are notifications (online, offline, joined, left, acked): an event with no
        bound queue is dropped, as a topic exchange does.
        """

    @abstractmethod
    async def consume_events(self, group: str, patterns: Sequence[str], handler: Handler) -> None:
        """Consume the events matching any of ``patterns`` (AMQP topic syntax: ``*`` one
        word, ``#`` any number) from the durable queue of ``group``: every consumer of a
        group competes for the same events, each group gets its own copy. Returns at once."""

    @abstractmethod
    async def stop_consuming(self) -> None:
        """Cancel every consumer of this bus; in-flight handlers finish, nothing new starts."""

    @abstractmethod
    def consuming(self) -> bool:
        """True while every consumer started on this bus is still subscribed."""

    @abstractmethod
    async def queue_depths(self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = ()) -> dict[str, int]:
        """Messages waiting in the dispatch and receipts queues and in the given nodes' and
        event groups' queues, labelled ``dispatch``, ``receipts``, ``node:<id>`` and
        ``events:<group>``; a queue that does not exist is left out. For operators
        (``/metrics``, ``herald status``), never on a message's path."""
