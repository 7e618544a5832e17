"""A user's live messages over Herald's WebSocket, with the JS client's semantics.

The token goes in the ``Authorization`` header of the handshake, never in the URL: query
strings end up in proxies' access logs. Token lifetimes are handled in band: when the
server says ``expiring``, the subscriber asks its token function for a fresh token and
sends ``refresh`` on the same connection, so nothing is interrupted; if the server closes
with 4001 anyway (no refresh landed before exp), it reconnects with a fresh token and
resumes, so nothing is lost either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from herald_client.errors import HeraldAPIError, Revoked, SubscriptionEnded, TokenExpired
from herald_client.policy import (
    REFRESH_ERRORS,
    TokenSource,
    backoff_delay,
    refresh_retry_delay,
    resolve_token,
)

CLOSE_TOKEN_EXPIRED = 4001
CLOSE_REVOKED = 4003
OPEN_TIMEOUT_S = 10.0
# How long a clean close waits for the server's close frame. The server persists the
# connection's pending acks before it answers, so waiting is what makes those acks hold.
CLOSE_TIMEOUT_S = 2.0
# How long a sent refresh may go unanswered before it counts as refused and is retried.
REFRESH_ANSWER_S = 5.0


class TokenUnavailable(Exception):
    """The app's token function failed; the next attempt asks it again."""


# Failures of one connection attempt that are worth another attempt.
RETRYABLE = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, HeraldAPIError, TokenUnavailable)


def _encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


class Subscriber:
    """A user's live messages, with reconnect, resume, ack, dedupe and token refresh.

    Iterate it to get message frames, each once and in offset order per channel, across
    reconnects: it keeps the highest offset per channel, sends those positions in a
    ``resume`` frame first thing on every connect and drops anything at or below them. A
    message is acknowledged once the app has handled it, that is when it asks for the next
    one (or closes). On a closed connection it tries the next URL of ``urls`` with
    exponential backoff and jitter (a draining node closes with 1012; a killed one just
    drops), asking ``token`` again when it is a function (plain or async). The iteration
    ends with ``Revoked`` on a 4003 close (kicked, revoked), and with ``TokenExpired`` on a
    4001 close when ``token`` is a fixed string that cannot be renewed.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: TokenSource,
        *,
        ack: bool = True,
        backoff_s: tuple[float, float] = (0.05, 2.0),
        max_buffer: int = 10_000,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.token = token
        self.ack = ack
        self.positions: dict[str, int] = {}
        self.duplicates = 0
        self.connects = 0
        self.closes: list[int | None] = []  # the server's close code per lost connection (None: no close frame)
        self.errors: list[dict[str, Any]] = []  # the server's `error` frames, latest 100
        self.refreshes = 0  # tokens renewed in band
        self.expires_at: float | None = None  # the connection's token exp, as the last `refreshed` said
        self._backoff = backoff_s
        self._queue: asyncio.Queue[dict[str, Any] | SubscriptionEnded] = asyncio.Queue(max_buffer)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._ws: ClientConnection | None = None
        self._handed: tuple[str, int] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_answer: asyncio.Future[bool] | None = None

    async def start(self) -> Subscriber:
        """Connect (once: starting a started subscriber changes nothing); raises TimeoutError,
        and stops trying, when no URL answers in time."""
        if self._task is not None:
            return self
        self._task = asyncio.create_task(self._run(), name="herald-subscriber")
        try:
            await asyncio.wait_for(self._connected.wait(), OPEN_TIMEOUT_S)
        except TimeoutError:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Ack what the app handled, then close cleanly: a close frame, and a short wait for
        the server's answer, which comes once it has stored those acks."""
        await self._ack_handed()
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close(1000, "bye")  # waits up to CLOSE_TIMEOUT_S for the answer, never raises
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> Subscriber:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> dict[str, Any]:
        await self._ack_handed()
        item = await self._queue.get()
        if isinstance(item, SubscriptionEnded):
            raise item
        self._handed = (item["channel"], item["offset"])
        return item

    async def _ack_handed(self) -> None:
        """The app asked for more, so it is done with the last one: say so (cumulative)."""
        handed, self._handed = self._handed, None
        if handed is None or not self.ack or self._ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(_encode({"type": "ack", "channel": handed[0], "offset": handed[1]}))

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            url = self.urls[(self.connects + attempt) % len(self.urls)]
            try:
                code, reason = await self._session(url)
            except RETRYABLE as exc:
                code = exc.rcvd.code if isinstance(exc, ConnectionClosed) and exc.rcvd else None
                reason = exc.rcvd.reason if isinstance(exc, ConnectionClosed) and exc.rcvd else ""
            if self._closing:
                return
            self.closes.append(code)
            ended = self._ended(code, reason)
            if ended is not None:
                await self._queue.put(ended)
                self._connected.set()
                return
            if code == CLOSE_TOKEN_EXPIRED:
                attempt = 0  # the connection was fine: come straight back with a fresh token
                continue
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, *self._backoff, jitter=random.random()))

    def _ended(self, code: int | None, reason: str) -> SubscriptionEnded | None:
        if code == CLOSE_REVOKED:
            return Revoked(reason)
        if code == CLOSE_TOKEN_EXPIRED and isinstance(self.token, str):
            return TokenExpired(reason)
        return None

    async def _session(self, url: str) -> tuple[int | None, str]:
        """One connection from handshake to close; returns the close code and reason the
        server sent (None when the connection dropped without a close frame)."""
        try:
            token = await resolve_token(self.token)
        except Exception as exc:  # whatever the app's function raised: it is asked again next time
            self._record_error({"type": "error", "code": "token_unavailable", "message": repr(exc)})
            raise TokenUnavailable(repr(exc)) from exc
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(
            url, additional_headers=headers, open_timeout=OPEN_TIMEOUT_S, close_timeout=CLOSE_TIMEOUT_S, max_size=None
        ) as ws:
            await ws.send(_encode({"type": "resume", "positions": self.positions}))
            self._ws = ws
            self.connects += 1
            self._connected.set()
            try:
                await self._receive(ws)
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
                if self._refresher is not None:
                    self._refresher.cancel()
                    self._refresher = None
        received = ws.protocol.close_rcvd
        return (received.code, received.reason) if received else (None, "")

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "message":
                await self._on_message(frame)
            elif kind == "expiring":
                self._on_expiring(ws, frame)
            elif kind == "refreshed":
                self.refreshes += 1
                self.expires_at = frame.get("exp")
                self._answer_refresh(True)
            elif kind == "error":
                self._record_error(frame)
                if frame.get("code") in REFRESH_ERRORS:
                    self._answer_refresh(False)

    async def _on_message(self, frame: dict[str, Any]) -> None:
        channel, offset = frame["channel"], frame["offset"]
        if offset <= self.positions.get(channel, 0):
            self.duplicates += 1
            return
        self.positions[channel] = offset
        await self._queue.put(frame)

    def _record_error(self, frame: dict[str, Any]) -> None:
        self.errors = [*self.errors[-99:], frame]

    def _on_expiring(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        """A fixed token cannot be renewed: let the 4001 come. A function is asked now."""
        if isinstance(self.token, str) or (self._refresher is not None and not self._refresher.done()):
            return
        in_s = frame.get("in_s")
        remaining = float(in_s) if isinstance(in_s, int | float) else 0.0
        self._refresher = asyncio.create_task(self._refresh(ws, remaining), name="herald-refresh")

    def _answer_refresh(self, accepted: bool) -> None:
        if self._refresh_answer is not None and not self._refresh_answer.done():
            self._refresh_answer.set_result(accepted)

    async def _refresh(self, ws: ClientConnection, remaining_s: float) -> None:
        """Send ``refresh`` with a fresh token; on a refusal, try again while a retry can
        still land before exp (the connection stays as it is meanwhile)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + remaining_s
        attempt = 0
        while True:
            self._refresh_answer = loop.create_future()
            try:
                token = await resolve_token(self.token)
                await ws.send(_encode({"type": "refresh", "token": token}))
                accepted = await asyncio.wait_for(self._refresh_answer, REFRESH_ANSWER_S)
            except ConnectionClosed:
                return
            except Exception as exc:  # no answer in time, or the token function failed
                accepted = False
                self._record_error({"type": "error", "code": "refresh_failed", "message": repr(exc)})
            finally:
                self._refresh_answer = None
            if accepted:
                return
            delay = refresh_retry_delay(attempt, deadline - loop.time())
            if delay is None:
                return
            attempt += 1
            await asyncio.sleep(delay)
