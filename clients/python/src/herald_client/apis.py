"""The HTTP side of Herald: ``Operator`` (apps, keys, limits on auth) and ``Publisher``
(an app: connect tokens from auth, messages, groups and presence through collect).

Every error answer becomes a ``HeraldAPIError`` carrying the status and the documented
error code, so callers branch on ``code`` rather than on message text.
"""

from __future__ import annotations

from typing import Any, cast

import httpx

from herald_client.errors import HeraldAPIError

TIMEOUT_S = 10.0


def _check(response: httpx.Response) -> None:
    """Raise the answer's documented error, if it is one."""
    if response.status_code < 400:
        return
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


def _object(response: httpx.Response) -> dict[str, Any]:
    """The JSON object a successful answer carries."""
    _check(response)
    body = response.json()
    if not isinstance(body, dict):
        raise HeraldAPIError(response.status_code, "unexpected_body", f"expected a JSON object: {response.text[:200]}")
    return body


def _items(response: httpx.Response, key: str) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], _object(response)[key])


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
        return cast(dict[str, str], _object(await self._http.post("/v1/apps", json={"name": name})))

    async def rotate_key(self, app_id: str) -> dict[str, str]:
        return cast(dict[str, str], _object(await self._http.post(f"/v1/apps/{app_id}/keys")))

    async def app_settings(self, app_id: str) -> dict[str, Any]:
        return _object(await self._http.get(f"/v1/apps/{app_id}"))

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
        return _object(await self._http.patch(f"/v1/apps/{app_id}", json=body))


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
        return str(_object(await self._auth.post("/v1/tokens", json=body))["token"])

    async def revoke(self, token: str) -> None:
        """Revoke one token; connections using it close with 4003. The token goes in the
        body (``POST /v1/revocations``), never in a URL that proxies would log."""
        _check(await self._auth.post("/v1/revocations", json={"token": token}))

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
        return _items(await self._collect.post("/v1/messages", json=body), "messages")

    async def join(self, group: str, user_id: str) -> dict[str, Any]:
        return _object(await self._collect.put(f"/v1/groups/{group}/members/{user_id}"))

    async def leave(self, group: str, user_id: str) -> None:
        _check(await self._collect.delete(f"/v1/groups/{group}/members/{user_id}"))

    async def members(self, group: str, after: str = "", limit: int = 100) -> dict[str, Any]:
        params: dict[str, str | int] = {"after": after, "limit": limit}
        return _object(await self._collect.get(f"/v1/groups/{group}/members", params=params))

    async def online(self, group: str | None = None, limit: int = 1000) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit}
        if group is not None:
            params["group"] = group
        return _object(await self._collect.get("/v1/online", params=params))

    async def presence(self, user_id: str) -> dict[str, Any]:
        return _object(await self._collect.get(f"/v1/users/{user_id}/presence"))

    async def kick(self, user_id: str) -> dict[str, Any]:
        return _object(await self._collect.post(f"/v1/users/{user_id}/kick"))

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
        return _items(await self._collect.post("/v1/messages/batch", json={"messages": items}), "results")

    async def message(self, message_id: str) -> dict[str, Any]:
        return _object(await self._collect.get(f"/v1/messages/{message_id}"))

    async def history(self, channel: str, since: int = 0, limit: int = 100) -> dict[str, Any]:
        params: dict[str, str | int] = {"since": since, "limit": limit}
        return _object(await self._collect.get(f"/v1/channels/{channel}/messages", params=params))
