"""Every Redis key and RabbitMQ exchange and queue name, in one place.

Each carries the namespace (``HERALD_NAMESPACE``) first, so two deployments or two test
runs on the same servers never see each other's data. Redis keys put the app id in a
hash tag (``{app}``) so a Redis Cluster keeps an app's multi-key operations in one slot;
keys of one node (``nodeconns``, ``nodechans``, ``node``, ``reap``) and the node-wide
ones (``nodes``, ``nodereports``, ``msgcounts``) carry no tag and are only ever touched
one key per command, so they may live on any slot.

The durable work queues (dispatch, receipts, webhook retries, their dead letters and the
retry delays) exist in two types, each under its own names (``WorkQueues``): RabbitMQ
refuses to re-declare a queue with other arguments, so quorum queues cannot take over the
names classic queues had. Classic keeps the names of earlier versions (``herald.dispatch``);
quorum queues are ``herald.qq.dispatch`` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_TYPES = ("quorum", "classic")


@dataclass(frozen=True, slots=True)
class WorkQueues:
    """The durable queues of one queue type, and the label operators see for each."""

    prefix: str
    queue_type: str

    @property
    def dispatch(self) -> str:
        return f"{self.prefix}dispatch"

    @property
    def receipts(self) -> str:
        return f"{self.prefix}receipts"

    @property
    def retries(self) -> str:
        """Webhook retries that are due: the delay queues dead-letter into it."""
        return f"{self.prefix}retries"

    @property
    def dead(self) -> str:
        """Dead letters of the three queues above: parked, counted, re-drivable."""
        return f"{self.prefix}dead"

    def delay(self, delay_ms: int) -> str:
        """A queue where retries wait ``delay_ms`` (its TTL) before going to ``retries``."""
        return f"{self.prefix}delay.{delay_ms}ms"

    @property
    def by_label(self) -> dict[str, str]:
        """Label -> queue name of the queues that dead-letter into ``dead``."""
        return {"dispatch": self.dispatch, "receipts": self.receipts, "retries": self.retries}

    def label_of(self, queue: str) -> str | None:
        return next((label for label, name in self.by_label.items() if name == queue), None)


@dataclass(frozen=True, slots=True)
class Names:
    namespace: str

    # RabbitMQ --------------------------------------------------------------
    @property
    def dispatch_exchange(self) -> str:
        """Direct exchange of the work queues, each bound with its own name as routing key."""
        return f"{self.namespace}.dispatch"

    def work_queues(self, queue_type: str) -> WorkQueues:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"unknown queue type {queue_type!r}")
        prefix = f"{self.namespace}.qq." if queue_type == "quorum" else f"{self.namespace}."
        return WorkQueues(prefix, queue_type)

    @property
    def dead_letter_exchange(self) -> str:
        """Direct exchange the work queues dead-letter to, routing key = the source queue."""
        return f"{self.namespace}.deadletter"

    @property
    def nodes_exchange(self) -> str:
        return f"{self.namespace}.nodes"

    def node_queue(self, node_id: str) -> str:
        return f"{self.namespace}.node.{node_id}"

    @property
    def events_exchange(self) -> str:
        """Topic exchange of notifications; routing keys in ``herald.events``."""
        return f"{self.namespace}.events"

    def events_queue(self, group: str) -> str:
        """The durable queue one consumer group (say, the webhook senders) shares."""
        return f"{self.namespace}.events.{group}"

    # Redis -----------------------------------------------------------------
    def conns_key(self, app_id: str, user_id: str) -> str:
        """Hash conn_id -> [node_id, since, device]: every live connection of one user."""
        return f"{self.namespace}:{{{app_id}}}:conns:{user_id}"

    def online_key(self, app_id: str) -> str:
        """Sorted set user_id -> expiry (epoch ms): the app's users with a live connection."""
        return f"{self.namespace}:{{{app_id}}}:online"

    def channel_nodes_key(self, app_id: str, channel: str) -> str:
        """Hash node_id -> number of that node's connections reading a group or broadcast channel."""
        return f"{self.namespace}:{{{app_id}}}:chan:{channel}"

    def rate_key(self, app_id: str) -> str:
        """Hash of the app's message token bucket (tokens, last refill)."""
        return f"{self.namespace}:{{{app_id}}}:rate"

    def node_conns_key(self, node_id: str) -> str:
        """Hash conn_id -> "app\tuser" of one node: what to clean up if it dies."""
        return f"{self.namespace}:nodeconns:{node_id}"

    def node_channels_key(self, node_id: str) -> str:
        """Set of "app\tchannel" one node has counts in: what to clean up if it dies."""
        return f"{self.namespace}:nodechans:{node_id}"

    def reap_key(self, node_id: str) -> str:
        """Claim on cleaning up after a dead node, so only one caller does it."""
        return f"{self.namespace}:reap:{node_id}"

    def node_key(self, node_id: str) -> str:
        """A push node's heartbeat: present while the node is alive."""
        return f"{self.namespace}:node:{node_id}"

    @property
    def nodes_key(self) -> str:
        """Set of node ids that ever registered (entries without a heartbeat are dead)."""
        return f"{self.namespace}:nodes"

    @property
    def node_reports_key(self) -> str:
        """Hash node_id -> JSON report (connections, per app, queue depth, when)."""
        return f"{self.namespace}:nodereports"

    def message_counts_key(self, second: int) -> str:
        """Hash app_id -> messages dispatched in that wall-clock second."""
        return f"{self.namespace}:msgcounts:{second}"

    @property
    def key_pattern(self) -> str:
        """Matches every key of this namespace (for tests and `herald status`)."""
        return f"{self.namespace}:*"
