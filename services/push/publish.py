"""Clients publishing from their sockets: permission, membership, size, the app's hook,
then the same accept path as ``POST /v1/messages`` (``herald.accept``).

The reply is sent only once the message is in the store with its offset, exactly like
collect's 202; routing to readers (the sender's other connections included) goes through
dispatch as for any message. Every refusal is a ``reply`` with an error and the ``seq``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from herald.services.push.protocol import Publish, reply_error_frame, reply_frame
from herald.services.push.readers import Reader

from herald.core import codec
from herald.core.errors import Forbidden, HeraldError
from herald.core.permissions import first_refusal
from herald.messaging.accept import Acceptor, Limits, draft_for_channel
from herald.messaging.appconfig import AppConfigs
from herald.messaging.webhooks import signature_headers
from herald.ops import metrics
from herald.web.responses import unlink

log = logging.getLogger("herald.push")

HOOK_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool
    data: Any = None
    reason: str = ""


class PublishHook:
    """Ask the app's publish hook about a candidate message: allow, allow with changed
    data, or refuse with a reason. A hook that fails or times out refuses: a moderation
    step that is down must not wave everything through."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(timeout=HOOK_TIMEOUT_S, follow_redirects=False, transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    async def ask(self, url: str, secret: str | None, candidate: dict[str, Any]) -> Verdict:
        body = codec.dumps(candidate)
        headers = {"content-type": "application/json", "x-herald-event": "publish.check"}
        if secret:
            headers.update(signature_headers(secret, body))
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("publish hook unreachable: %s", exc.__class__.__name__)
            return Verdict(False, reason="the app's publish hook did not answer")
        try:
            answer = response.json() if response.status_code == 200 else None
        except ValueError:
            answer = None
        finally:
            unlink(response)  # one per client publish: no cyclic garbage left behind
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            return Verdict(False, reason=f"the app's publish hook answered {response.status_code} without a verdict")
        if not answer["allow"]:
            return Verdict(False, reason=str(answer.get("reason") or "refused by the app")[:200])
        return Verdict(True, answer["data"] if "data" in answer else candidate["data"])


class ClientPublishing:
    def __init__(self, acceptor: Acceptor, configs: AppConfigs, hook: PublishHook, limits: Limits) -> None:
        self._acceptor = acceptor
        self._configs = configs
        self._hook = hook
        self._limits = limits

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
        if config.publish_hook_url:
            candidate = {"app_id": conn.app_id, **sender, "channel": frame.channel, "event": frame.event}
            verdict = await self._hook.ask(
                config.publish_hook_url, config.webhook_secret, {**candidate, "data": frame.data}
            )
            if not verdict.allow:
                raise Forbidden(verdict.reason, code="refused_by_hook")
            draft = draft_for_channel(frame.channel, frame.event, verdict.data, limits, sender)
        [[message]] = await self._acceptor.accept(conn.app_id, [draft])
        return message.id, message.channel, message.offset
