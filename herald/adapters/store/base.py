"""The store: durable messages, offsets, apps, keys, tokens, cursors.

One interface per concept, so a reader finds each behaviour with its neighbours and a
caller can name the little it needs; ``Store`` is their union, what each adapter
implements (herald/adapters/store/sqlite/ and mongo/, one module per concept).

Two implementations meet this one specification (tests/integration/test_store_contract.py):
MongoDB through PyMongo's async API for clusters, SQLite for standalone. Times are epoch
seconds (float) at this interface; the MongoDB adapter stores datetimes so TTL indexes
work, and also filters ``expires_at > now`` because TTL deletion is lazy.

Every method raises ``herald.errors.Unavailable`` when the server cannot be reached in
time (so collect answers 503), and nothing else for faults of the server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from herald.core.model import App, AppConfig, Delivery, Message, TokenRecord

# Longer than any request may take (store and bus calls time out in seconds), short
# enough that a retry after a crash is not refused for long.
CLAIM_TIMEOUT_S = 60.0


class StoreLifecycle(ABC):
    """Opening, closing and probing the connection to the server."""

    # Writes worth having out at once (collect's group commit sizes its slots by it): a
    # server that writes concurrently overlaps their round trips; a store that writes one
    # at a time only queues the second, and its groups come out smaller for nothing.
    concurrent_writes: int = 2

    @abstractmethod
    async def start(self) -> None:
        """Connect and create indexes; idempotent across restarts and replicas."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connections; nothing is asked of the store afterwards."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the server answers; raise Unavailable otherwise (readiness)."""


class AppStore(ABC):
    """Apps and their credentials: the app record, its API key, its config, its users' connect tokens."""

    # Apps and their API keys ------------------------------------------------
    @abstractmethod
    async def insert_app(self, app: App) -> None:
        """Record a new app (tenant); its id is unique."""

    @abstractmethod
    async def get_app(self, app_id: str) -> App | None:
        """The app, or None if there is none of that id."""

    @abstractmethod
    async def replace_api_key(self, app_id: str, key_hash: str) -> None:
        """Make ``key_hash`` the app's only key: every earlier key stops working."""

    @abstractmethod
    async def app_for_key(self, key_hash: str) -> str | None:
        """The app id owning the key with this hash, or None."""

    @abstractmethod
    async def get_app_config(self, app_id: str) -> AppConfig:
        """The app's webhook and limits; the defaults (``AppConfig()``) if never set."""

    @abstractmethod
    async def set_app_config(self, app_id: str, config: AppConfig) -> None:
        """Replace the app's config as a whole (stored as one JSON string, not as fields)."""

    # User connect tokens ----------------------------------------------------
    @abstractmethod
    async def insert_token(self, token: TokenRecord) -> None:
        """Record a connect token by its hash (the token itself is never stored)."""

    @abstractmethod
    async def get_token(self, token_hash: str, now: float) -> TokenRecord | None:
        """The token if it exists and ``expires_at > now``."""

    @abstractmethod
    async def get_tokens(self, token_hashes: Sequence[str], now: float) -> dict[str, TokenRecord]:
        """Of these hashes, the tokens that exist with ``expires_at > now``, by hash, in one
        query: a push node checks the tokens of every handshake in flight together, and on
        some servers (the stand-in) each expiring read costs a scan of all live tokens."""

    @abstractmethod
    async def delete_token(self, token_hash: str) -> bool:
        """True if a token was deleted."""

    @abstractmethod
    async def delete_user_tokens(self, app_id: str, user_id: str) -> int:
        """Delete every token of that app's user; how many there were."""


class OffsetStore(ABC):
    """Per-channel offset counters: where each channel's next message goes."""

    @abstractmethod
    async def allocate_offsets(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        """Atomically add ``counts[channel]`` to each channel's counter; return the new values.

        The caller owns offsets ``new - count + 1 .. new``. Counters start at 0, so the
        first message of a channel has offset 1. Concurrent callers never overlap.
        """

    @abstractmethod
    async def channel_heads(self, app_id: str, channels: Sequence[str]) -> dict[str, int]:
        """Each channel's last allocated offset (0 for a channel never written), in one query."""


class MessageStore(ABC):
    """The messages themselves, their status, and the outbox's record of what the bus confirmed."""

    @abstractmethod
    async def insert_messages(self, messages: Sequence[Message]) -> None:
        """Insert all, durably, before returning. (app, channel, offset) is unique."""

    @abstractmethod
    async def get_message(self, app_id: str, message_id: str, now: float) -> Message | None:
        """The message of that app, unless it expired."""

    @abstractmethod
    async def read_channel(self, app_id: str, channel: str, after: int, limit: int, now: float) -> list[Message]:
        """Unexpired messages with ``offset > after``, ascending, at most ``limit``."""

    @abstractmethod
    async def advance_status(self, message_ids: Sequence[str], status: str) -> None:
        """Move messages forward to ``status``; a message already past it keeps its status."""

    @abstractmethod
    async def unpublished(self, before_ts: int, limit: int, now: float) -> list[Message]:
        """Unexpired messages never confirmed by the bus and accepted before ``before_ts``
        (epoch milliseconds), oldest first: the outbox sweeper's work."""

    @abstractmethod
    async def mark_published(self, message_ids: Sequence[str]) -> None:
        """Record that the bus confirmed these messages (``published`` becomes "yes")."""


class ReceiptStore(ABC):
    """What reached whom: per-connection deliveries, acknowledgements and each user's cursors."""

    @abstractmethod
    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Remember each (message, connection) write and move those messages to "delivered".

        Idempotent: a delivery reported twice keeps its first time.
        """

    @abstractmethod
    async def record_ack(
        self, app_id: str, user_id: str, conn_id: str, positions: Mapping[str, int], at: float
    ) -> None:
        """A connection acknowledged each channel up to an offset: raise the user's cursors,
        stamp that connection's deliveries at or below it, move those messages to "acked"."""

    @abstractmethod
    async def deliveries_of(self, app_id: str, message_id: str) -> list[Delivery]:
        """The per-connection detail of one message, in delivery order."""

    # Acknowledged positions -------------------------------------------------
    @abstractmethod
    async def save_cursors(self, app_id: str, user_id: str, positions: Mapping[str, int]) -> None:
        """Raise each channel's cursor to the given offset; a cursor never moves back."""

    @abstractmethod
    async def cursors_of(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Each user's cursors (channel -> offset) in one query; a user with none is left out.
        Connections starting together on a push node share it."""

    async def get_cursors(self, app_id: str, user_id: str) -> dict[str, int]:
        return (await self.cursors_of(app_id, [user_id])).get(user_id, {})


class GroupStore(ABC):
    """Group membership, with the offset each member joined after."""

    @abstractmethod
    async def add_member(self, app_id: str, group: str, user_id: str, joined_after: int, now: float) -> bool:
        """Make the user a member; True if they were not one already.

        ``joined_after`` is the group channel's last offset when they joined: a member
        with no acknowledged position starts reading after it, not from the group's first
        message. Joining again keeps the first record.
        """

    @abstractmethod
    async def remove_member(self, app_id: str, group: str, user_id: str) -> bool:
        """True if the user was a member."""

    @abstractmethod
    async def list_members(self, app_id: str, group: str, after: str, limit: int) -> list[str]:
        """Member user ids greater than ``after``, ascending, at most ``limit`` (paging)."""

    @abstractmethod
    async def memberships(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Each user's groups (group name -> ``joined_after`` offset) in one query; a user in
        none is left out. Connections starting together on a push node share it."""

    async def groups_of(self, app_id: str, user_id: str) -> dict[str, int]:
        """The user's groups: group name -> ``joined_after`` offset."""
        return (await self.memberships(app_id, [user_id])).get(user_id, {})


class IdempotencyStore(ABC):
    """Idempotency keys: one claim per key, so a retried request runs once."""

    @abstractmethod
    async def reserve_idempotency(self, app_id: str, key: str, expires_at: float, now: float) -> str | None:
        """Claim ``key`` for one request.

        Returns None if this call claimed it; otherwise the result recorded by the claimer
        (a JSON string), or "" while that request is still in progress. An expired claim
        counts as absent and is claimed afresh, and so does one left in progress for
        ``CLAIM_TIMEOUT_S``: its request died (a crashed process) and will never complete.
        """

    @abstractmethod
    async def complete_idempotency(self, app_id: str, key: str, result: str) -> None:
        """Record the result (a JSON string) of the request that claimed ``key``: retries get it."""

    @abstractmethod
    async def release_idempotency(self, app_id: str, key: str) -> None:
        """Drop a claim whose request failed, so a retry can run."""


class Store(StoreLifecycle, AppStore, OffsetStore, MessageStore, ReceiptStore, GroupStore, IdempotencyStore):
    """The whole store: every concept above, as each adapter implements it."""
