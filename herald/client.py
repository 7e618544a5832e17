"""Python clients of Herald's HTTP APIs: ``Operator`` (apps and keys) and ``Publisher`` (an app).

Errors come back as ``HeraldAPIError`` carrying the status and the documented error
code, so callers branch on ``code`` rather than on message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = ["HeraldAPIError", "Operator", "Publisher", "Revoked", "Subscriber"]

CLOSE_REVOKED = 4003

TIMEOUT_S = 10.0


class HeraldAPIError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: Any = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after_s = retry_after_s  # from Retry-After on a 429


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": "http_error", "message": response.text[:200]}
        retry_after = response.headers.get("retry-after")
        raise HeraldAPIError(
            response.status_code,
            error.get("code", ""),
            error.get("message", ""),
            error.get("details"),
            float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def _http(base_url: str, credential: str, timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"), headers={"authorization": f"Bearer {credential}"}, timeout=timeout_s
    )


class Operator:
    """The operator's view of auth: create apps, rotate their keys."""

    def __init__(self, auth_url: str, admin_token: str, timeout_s: float = TIMEOUT_S) -> None:
        self._http = _http(auth_url, admin_token, timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Operator:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def create_app(self, name: str) -> dict[str, str]:
        return _check(await self._http.post("/v1/apps", json={"name": name}))

    async def rotate_key(self, app_id: str) -> dict[str, str]:
        return _check(await self._http.post(f"/v1/apps/{app_id}/keys"))

    async def app_settings(self, app_id: str) -> dict[str, Any]:
        return _check(await self._http.get(f"/v1/apps/{app_id}"))

    async def configure(
        self,
        app_id: str,
        *,
        webhook_url: str | None = None,
        limits: dict[str, Any] | None = None,
        rotate_webhook_secret: bool = False,
        publish_hook_url: str | None = None,
    ) -> dict[str, Any]:
        """Set the app's webhook URL ("" turns webhooks off) and/or limits; returns the
        settings, including the webhook secret receivers verify signatures with."""
        body: dict[str, Any] = {"rotate_webhook_secret": rotate_webhook_secret}
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        if limits is not None:
            body["limits"] = limits
        if publish_hook_url is not None:
            body["publish_hook_url"] = publish_hook_url
        return _check(await self._http.patch(f"/v1/apps/{app_id}", json=body))


class Publisher:
    """An app's client: connect tokens from auth, messages through collect."""

    def __init__(self, auth_url: str, collect_url: str, api_key: str, timeout_s: float = TIMEOUT_S) -> None:
        self._auth = _http(auth_url, api_key, timeout_s)
        self._collect = _http(collect_url, api_key, timeout_s)

    async def close(self) -> None:
        await self._auth.aclose()
        await self._collect.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def token(
        self, user_id: str, ttl_s: int | None = None, device: str | None = None, publish: list[str] | None = None
    ) -> str:
        """A connect token; ``publish`` lists the channel patterns the user may publish to."""
        body: dict[str, Any] = {"user_id": user_id}
        if publish is not None:
            body["publish"] = publish
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        if device is not None:
            body["device"] = device
        return _check(await self._auth.post("/v1/tokens", json=body))["token"]

    async def revoke(self, token: str) -> None:
        """Revoke one token; connections using it close with 4003."""
        _check(await self._auth.delete(f"/v1/tokens/{token}"))

    async def revoke_user(self, user_id: str) -> None:
        """Revoke every token of the user; all their connections close with 4003."""
        _check(await self._auth.delete(f"/v1/users/{user_id}/tokens"))

    async def send_to_group(self, group: str, event: str, data: Any = None, **options: Any) -> dict[str, Any]:
        """One message on ``group:<group>``; returns ``{id, channel, offset}``."""
        return (await self._send({"group": group}, event, data, **options))[0]

    async def broadcast(self, event: str, data: Any = None, **options: Any) -> dict[str, Any]:
        """One message on ``broadcast``, read by every connected user of the app."""
        return (await self._send({"broadcast": True}, event, data, **options))[0]

    async def _send(
        self, to: dict[str, Any], event: str, data: Any, *, ttl_s: int | None = None, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"to": to, "event": event, "data": data}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return _check(await self._collect.post("/v1/messages", json=body))["messages"]

    async def join(self, group: str, user_id: str) -> dict[str, Any]:
        return _check(await self._collect.put(f"/v1/groups/{group}/members/{user_id}"))

    async def leave(self, group: str, user_id: str) -> None:
        _check(await self._collect.delete(f"/v1/groups/{group}/members/{user_id}"))

    async def members(self, group: str, after: str = "", limit: int = 100) -> dict[str, Any]:
        params = {"after": after, "limit": limit}
        return _check(await self._collect.get(f"/v1/groups/{group}/members", params=params))

    async def online(self, group: str | None = None, limit: int = 1000) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if group is not None:
            params["group"] = group
        return _check(await self._collect.get("/v1/online", params=params))

    async def presence(self, user_id: str) -> dict[str, Any]:
        return _check(await self._collect.get(f"/v1/users/{user_id}/presence"))

    async def kick(self, user_id: str) -> dict[str, Any]:
        return _check(await self._collect.post(f"/v1/users/{user_id}/kick"))

    async def send(
        self,
        users: list[str],
        event: str,
        data: Any = None,
        *,
        ttl_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Send one event to users; returns ``[{id, channel, offset, online}]``, one per user."""
        return await self._send({"users": users}, event, data, ttl_s=ttl_s, idempotency_key=idempotency_key)

    async def send_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each item is a /v1/messages body; each result has ``messages`` or ``error``."""
        return _check(await self._collect.post("/v1/messages/batch", json={"messages": items}))["results"]

    async def message(self, message_id: str) -> dict[str, Any]:
        return _check(await self._collect.get(f"/v1/messages/{message_id}"))

    async def history(self, channel: str, since: int = 0, limit: int = 100) -> dict[str, Any]:
        params = {"since": since, "limit": limit}
        return _check(await self._collect.get(f"/v1/channels/{channel}/messages", params=params))


class Revoked(Exception):
    """The server closed the subscription for good (4003: kicked, or the token revoked)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"closed by the server with 4003: {reason or 'revoked'}")
        self.reason = reason


TokenSource = str | Callable[[], Awaitable[str]]


class Subscriber:
    """A user's live messages, with reconnect, resume, ack and dedupe, as the JS client does.

    Iterate it to get message frames, each once and in offset order per channel, across
    reconnects: it keeps the highest offset per channel, sends those positions in a
    ``resume`` frame first thing on every connect and drops anything at or below them. A
    message is acknowledged once the app has handled it, that is when it asks for the next
    one (or closes). On a closed connection it tries the next URL of ``urls`` with
    exponential backoff and jitter (a draining node closes with 1012; a killed one just
    drops), asking ``token`` again when it is a function, so an expired token is renewed.
    A 4003 close (kicked, revoked) ends the iteration with ``Revoked``.
    """

    def __init__(
        self,
        urls: list[str],
        token: TokenSource,
        *,
        ack: bool = True,
        backoff_s: tuple[float, float] = (0.05, 2.0),
        max_buffer: int = 10_000,
    ) -> None:
        self.urls = urls
        self.token = token
        self.ack = ack
        self.positions: dict[str, int] = {}
        self.duplicates = 0
        self.connects = 0
        self.closes: list[int | None] = []
        self.errors: list[dict[str, Any]] = []  # the server's `error` frames, latest 100
        self._backoff = backoff_s
        self._queue: asyncio.Queue[dict[str, Any] | Revoked] = asyncio.Queue(max_buffer)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._ws: ClientConnection | None = None
        self._handed: tuple[str, int] | None = None

    async def start(self) -> Subscriber:
        self._task = asyncio.create_task(self._run(), name="herald-subscriber")
        await asyncio.wait_for(self._connected.wait(), TIMEOUT_S)
        return self

    async def close(self) -> None:
        await self._ack_handed()
        self._closing = True
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
        if isinstance(item, Revoked):
            raise item
        self._handed = (item["channel"], item["offset"])
        return item

    async def _ack_handed(self) -> None:
        """The app asked for more, so it is done with the last one: say so (cumulative)."""
        handed, self._handed = self._handed, None
        if handed is None or not self.ack or self._ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(orjson.dumps({"type": "ack", "channel": handed[0], "offset": handed[1]}).decode())

    async def _token(self) -> str:
        return self.token if isinstance(self.token, str) else await self.token()

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            url = self.urls[(self.connects + attempt) % len(self.urls)]
            try:
                token = await self._token()
                async with connect(f"{url}?token={token}", open_timeout=TIMEOUT_S, max_size=None) as ws:
                    await ws.send(orjson.dumps({"type": "resume", "positions": self.positions}).decode())
                    self._ws = ws
                    self.connects += 1
                    attempt = 0
                    self._connected.set()
                    await self._receive(ws)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, HeraldAPIError) as exc:
                code = exc.rcvd.code if isinstance(exc, ConnectionClosed) and exc.rcvd else None
                self.closes.append(code)
                if code == CLOSE_REVOKED:
                    assert isinstance(exc, ConnectionClosed) and exc.rcvd is not None
                    await self._queue.put(Revoked(exc.rcvd.reason))
                    self._connected.set()
                    return
            finally:
                self._ws = None
            attempt += 1
            delay = min(self._backoff[1], self._backoff[0] * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = orjson.loads(raw)
            kind = frame.get("type")
            if kind == "error":
                self.errors = [*self.errors[-99:], frame]
            if kind != "message":
                continue
            channel, offset = frame["channel"], frame["offset"]
            if offset <= self.positions.get(channel, 0):
                self.duplicates += 1
                continue
            self.positions[channel] = offset
            await self._queue.put(frame)
