"""Clients publishing from their sockets: permission, membership, size, the app's
``messages_per_s`` (the bucket collect charges), the app's hook, then the same accept
path as ``POST /v1/messages`` (``herald.accept``).

The reply is sent only once the message is in the store with its offset, exactly like
collect's 202; routing to readers (the sender's other connections included) goes through
dispatch as for any message. Every refusal is a ``reply`` with an error and the ``seq``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from herald.core import codec
from herald.core.errors import Forbidden, HeraldError
from herald.core.permissions import first_refusal
from herald.messaging.accept import Acceptor, Limits, draft_for_channel
from herald.messaging.appconfig import AppConfigs
from herald.messaging.ratelimit import MessageRate
from herald.messaging.webhooks import signature_headers
from herald.ops import metrics
from herald.services.push.protocol import Publish, reply_error_frame, reply_frame
from herald.services.push.readers import Reader
from herald.web.responses import unlink

log = logging.getLogger("herald.push")

# Bytes of a hook's answer read at most, beyond twice the app's largest payload (the hook
# may answer with changed data): a bigger answer is refused unread.
HOOK_ANSWER_SLACK_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool
    data: Any = None
    reason: str = ""


class _TooLarge(Exception):
    pass


class PublishHook:
    """Ask the app's publish hook about a candidate message: allow, allow with changed
    data, or refuse with a reason. A hook that fails, times out or answers too much
    refuses: a moderation step that is down must not wave everything through.

    Bounds, because a hook is code someone else runs: one ``timeout_s`` covers the whole
    call (waiting for the app's slot, connecting, sending, and reading the answer however
    slowly it trickles); the answer is streamed and read up to a cap; and each app has
    ``concurrency`` calls in flight at most, so one app's slow hook holds its own
    publishes, not every app's (the connection pool is sized for all apps' slots).
    """

    def __init__(
        self,
        timeout_s: float = 2.0,
        concurrency: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._concurrency = concurrency
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        # Per app: its semaphore and how many calls use it; dropped when none does, so
        # the table holds only apps with calls in flight.
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def close(self) -> None:
        await self._client.aclose()

    async def ask(
        self, app_id: str, url: str, secret: str | None, candidate: dict[str, Any], max_answer_bytes: int
    ) -> Verdict:
        semaphore, users = self._slots.get(app_id) or (asyncio.Semaphore(self._concurrency), 0)
        self._slots[app_id] = (semaphore, users + 1)
        try:
            async with asyncio.timeout(self._timeout_s):
                async with semaphore:
                    return await self._call(url, secret, candidate, max_answer_bytes)
        except TimeoutError:
            log.warning("publish hook of %s did not answer within %.1f s", app_id, self._timeout_s)
            return Verdict(False, reason=f"the app's publish hook did not answer within {self._timeout_s:g} s")
        finally:
            semaphore, users = self._slots[app_id]
            if users <= 1:
                del self._slots[app_id]
            else:
                self._slots[app_id] = (semaphore, users - 1)

    async def _call(self, url: str, secret: str | None, candidate: dict[str, Any], max_answer_bytes: int) -> Verdict:
        body = codec.dumps(candidate)
        headers = {"content-type": "application/json", "x-herald-event": "publish.check"}
        if secret:
            headers.update(signature_headers(secret, body))
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                raw = await _read_capped(response, max_answer_bytes) if status == 200 else b""
        except _TooLarge:
            return Verdict(False, reason=f"the app's publish hook answered more than {max_answer_bytes} bytes")
        except httpx.HTTPError as exc:
            log.warning("publish hook unreachable: %s", exc.__class__.__name__)
            return Verdict(False, reason="the app's publish hook did not answer")
        try:
            answer = codec.loads(raw) if status == 200 else None
        except codec.JSONDecodeError:
            answer = None
        finally:
            unlink(response)  # one per client publish: no cyclic garbage left behind
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            return Verdict(False, reason=f"the app's publish hook answered {status} without a verdict")
        if not answer["allow"]:
            return Verdict(False, reason=str(answer.get("reason") or "refused by the app")[:200])
        return Verdict(True, answer["data"] if "data" in answer else candidate["data"])


async def _read_capped(response: httpx.Response, most: int) -> bytes:
    """The body, read as it streams in; _TooLarge as soon as it passes ``most`` bytes (or
    says it will), so a huge answer costs a cap's worth of memory, not its size."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > most:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


class ClientPublishing:
    def __init__(
        self, acceptor: Acceptor, configs: AppConfigs, hook: PublishHook, limits: Limits, rate: MessageRate
    ) -> None:
        self._acceptor = acceptor
        self._configs = configs
        self._hook = hook
        self._limits = limits
        self._rate = rate

    async def reply(self, conn: Reader, frame: Publish) -> str:
        """The reply frame for one publish: its id and offset, or why not (counted by code)."""
        try:
            return reply_frame(frame.seq, *await self._accept(conn, frame))
        except HeraldError as exc:
            metrics.errors.labels("push", exc.code).inc()
            return reply_error_frame(frame.seq, exc.code, exc.message)

    async def _accept(self, conn: Reader, frame: Publish) -> tuple[str, str, int]:
        refusal = first_refusal(conn.publish, frame.channel, conn.groups)
        if refusal is not None:
            raise Forbidden(refusal[1], code=refusal[0])
        config = await self._configs.get(conn.app_id)
        limits = Limits(
            config.limits.max_payload or self._limits.max_payload,
            self._limits.max_recipients,
            self._limits.default_ttl_s,
        )
        sender = {"user_id": conn.user_id, "conn_id": conn.conn_id}
        draft = draft_for_channel(frame.channel, frame.event, frame.data, limits, sender)
        # Charged before the hook: a client over the app's rate costs no hook call either.
        await self._rate.charge(conn.app_id, 1)
        if config.publish_hook_url:
            candidate = {"app_id": conn.app_id, **sender, "channel": frame.channel, "event": frame.event}
            verdict = await self._hook.ask(
                conn.app_id,
                config.publish_hook_url,
                config.webhook_secret,
                {**candidate, "data": frame.data},
                2 * limits.max_payload + HOOK_ANSWER_SLACK_BYTES,
            )
            if not verdict.allow:
                raise Forbidden(verdict.reason, code="refused_by_hook")
            draft = draft_for_channel(frame.channel, frame.event, verdict.data, limits, sender)
        [[message]] = await self._acceptor.accept(conn.app_id, [draft])
        return message.id, message.channel, message.offset
