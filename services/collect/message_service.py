"""collect's message operations without HTTP: send (idempotently), send a batch, read status
and history.

The routes (``services/collect/messages.py``) only move values between HTTP and these
methods. Results are the JSON shapes of the answers (``Accepted`` and friends), because an
idempotent send records its result as JSON and a retry answers exactly that.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from herald.adapters.store.base import Store
from herald.core import codec
from herald.core.errors import BadRequest, Conflict, HeraldError, NotFound, PayloadTooLarge, TooManyRequests
from herald.core.model import Message, parse_channel
from herald.messaging.accept import Draft, Limits, draft_for
from herald.services.collect.groupcommit import GroupCommit
from herald.services.collect.message_models import SendMessage
from herald.services.collect.online import OnlineLookups
from herald.services.collect.quotas import Quotas

# A batch may address at most this many times HERALD_MAX_BATCH recipients in all.
RECIPIENTS_PER_BATCH_ITEM = 10


class Recipients(Protocol):
    """Whom a send is for: ``To`` of the FastAPI route, or the fast route's msgspec struct."""

    @property
    def users(self) -> list[str] | None:
        """User ids, when the send is for users."""

    @property
    def group(self) -> str | None:
        """The group's name, when the send is for a group."""

    @property
    def broadcast(self) -> bool | None:
        """True when the send is for every user of the app."""


class SendCommand(Protocol):
    """One send as ``MessageService.send`` takes it: ``SendMessage`` validated by pydantic
    (the documented route, batch items), or the struct msgspec decodes on the fast route
    (``send_route.py``). Both hold the same values for the same body."""

    @property
    def to(self) -> Recipients:
        """Whom the message is for."""

    @property
    def event(self) -> str:
        """The event name the recipients' clients see."""

    @property
    def data(self) -> Any:
        """The payload, any JSON value."""

    @property
    def ttl_s(self) -> int | None:
        """How long the message is kept for offline recipients; None: the app's default."""

    @property
    def idempotency_key(self) -> str | None:
        """A retried request with the same key is accepted once."""


def draft_of(item: SendCommand, limits: Limits) -> Draft:
    """The checked message ``item`` asks for (400 or 413 with the reason if it cannot be sent)."""
    # The three fields as a plain dict: model_dump() was a twentieth of a batch's time.
    to = {"users": item.to.users, "group": item.to.group, "broadcast": item.to.broadcast}
    return draft_for(to, item.event, item.data, item.ttl_s, limits)


def invalid_item(exc: ValidationError) -> dict[str, Any]:
    """A batch item's schema errors, shaped as the 422 of a single send would give them."""
    details = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()[:20]]
    return {"code": "invalid_request", "message": "the item does not match the schema", "details": details}


def accepted(messages: list[Message], online: dict[str, bool | None]) -> list[dict[str, Any]]:
    return [{"id": m.id, "channel": m.channel, "offset": m.offset, "online": online[m.channel]} for m in messages]


class MessageService:
    def __init__(self, store: Store, committer: GroupCommit, lookups: OnlineLookups, quotas: Quotas) -> None:
        self._store = store
        self._committer = committer
        self._lookups = lookups
        self._quotas = quotas

    async def send(self, app_id: str, item: SendCommand) -> list[dict[str, Any]]:
        """Accept one message (one per recipient channel); with an idempotency key, once."""
        draft = draft_of(item, await self._quotas.limits(app_id))
        return await self._send_once(app_id, draft, item.idempotency_key)

    async def send_batch(self, app_id: str, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result per item, in order: ``{"messages": [...]}`` or ``{"error": {...}}``.

        Each item is validated and sent on its own; items without an idempotency key are
        accepted together, after the others. Only the batch as a whole being too large
        fails the call (413).
        """
        max_batch = await self._quotas.max_batch(app_id)
        if len(items) > max_batch:
            raise PayloadTooLarge(f"at most {max_batch} messages per batch", code="batch_too_large")
        limits = await self._quotas.limits(app_id)
        results: list[dict[str, Any]] = [{} for _ in items]
        plain: list[tuple[int, Draft]] = []
        for index, raw in enumerate(items):
            outcome = await self._batch_item(app_id, raw, limits)
            if isinstance(outcome, Draft):
                plain.append((index, outcome))
            else:
                results[index] = outcome
        total = sum(len(draft.channels) for _, draft in plain)
        if total > max_batch * RECIPIENTS_PER_BATCH_ITEM:
            raise PayloadTooLarge(
                f"{total} messages in one request; the limit is {max_batch * RECIPIENTS_PER_BATCH_ITEM}",
                code="batch_too_large",
            )
        if plain:
            groups = await self._accept(app_id, [draft for _, draft in plain])
            for (index, _), messages in zip(plain, groups, strict=True):
                results[index] = {"messages": messages}
        return results

    async def status(self, app_id: str, message_id: str) -> dict[str, Any]:
        """The message as stored, with one delivery per connection it was written to."""
        message = await self._store.get_message(app_id, message_id, time.time())
        if message is None:
            raise NotFound("no such message (or it expired)", code="unknown_message")
        deliveries = await self._store.deliveries_of(app_id, message_id)
        return {**message.to_public(), "deliveries": [d.to_public() for d in deliveries]}

    async def history(self, app_id: str, channel: str, since: int, limit: int) -> dict[str, Any]:
        """Up to ``limit`` of the channel's live messages after offset ``since``."""
        parse_channel(channel)
        messages = await self._store.read_channel(app_id, channel, since, limit, time.time())
        return {
            "channel": channel,
            "messages": [m.to_public() for m in messages],
            "next": messages[-1].offset if messages else since,
        }

    async def _batch_item(self, app_id: str, raw: dict[str, Any], limits: Limits) -> Draft | dict[str, Any]:
        """An item's result when it is settled here (refused, or sent with its idempotency
        key), else its draft, to be accepted with the batch's other plain items."""
        try:
            item = SendMessage.model_validate(raw)
            draft = draft_of(item, limits)
        except ValidationError as exc:
            return {"error": invalid_item(exc)}
        except HeraldError as exc:
            return exc.to_body()
        if item.idempotency_key is None:
            return draft
        try:
            return {"messages": await self._send_once(app_id, draft, item.idempotency_key)}
        except (BadRequest, Conflict, TooManyRequests) as exc:
            return exc.to_body()

    async def _send_once(self, app_id: str, draft: Draft, key: str | None) -> list[dict[str, Any]]:
        """Accept ``draft``; with a key, a retry gets the first result and a concurrent
        duplicate a 409, and a failed first attempt frees the key for the next."""
        if key is None:
            return (await self._accept(app_id, [draft]))[0]
        now = time.time()
        earlier = await self._store.reserve_idempotency(app_id, key, now + draft.ttl_s, now)
        if earlier == "":
            raise Conflict("a request with this idempotency key is still in progress", code="in_progress")
        if earlier is not None:
            recorded: list[dict[str, Any]] = codec.loads(earlier)
            return recorded
        try:
            result = (await self._accept(app_id, [draft]))[0]
        except BaseException:
            with contextlib.suppress(HeraldError):
                await self._store.release_idempotency(app_id, key)
            raise
        await self._store.complete_idempotency(app_id, key, codec.dumps_text(result))
        return result

    async def _accept(self, app_id: str, drafts: list[Draft]) -> list[list[dict[str, Any]]]:
        """Charge the app's rate limit, store and queue (with concurrent requests), and say
        which user recipients were online."""
        await self._quotas.charge(app_id, sum(len(d.channels) for d in drafts))
        groups = await self._committer.accept(app_id, drafts)
        online = await self._lookups.online(app_id, [m.channel for group in groups for m in group])
        return [accepted(group, online) for group in groups]
