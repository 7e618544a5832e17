"""Python clients of Herald's HTTP APIs: ``Operator`` (apps and keys) and ``Publisher`` (an app).

Errors come back as ``HeraldAPIError`` carrying the status and the documented error
code, so callers branch on ``code`` rather than on message text.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["HeraldAPIError", "Operator", "Publisher"]

TIMEOUT_S = 10.0


class HeraldAPIError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": "http_error", "message": response.text[:200]}
        raise HeraldAPIError(
            response.status_code, error.get("code", ""), error.get("message", ""), error.get("details")
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

    async def token(self, user_id: str, ttl_s: int | None = None) -> str:
        body: dict[str, Any] = {"user_id": user_id}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return _check(await self._auth.post("/v1/tokens", json=body))["token"]

    async def revoke(self, token: str) -> None:
        _check(await self._auth.delete(f"/v1/tokens/{token}"))

    async def send(
        self,
        users: list[str],
        event: str,
        data: Any = None,
        *,
        ttl_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Send one event to users; returns ``[{id, channel, offset}]``, one per user."""
        body: dict[str, Any] = {"to": {"users": users}, "event": event, "data": data}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return _check(await self._collect.post("/v1/messages", json=body))["messages"]

    async def send_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each item is a /v1/messages body; each result has ``messages`` or ``error``."""
        return _check(await self._collect.post("/v1/messages/batch", json={"messages": items}))["results"]

    async def message(self, message_id: str) -> dict[str, Any]:
        return _check(await self._collect.get(f"/v1/messages/{message_id}"))

    async def history(self, channel: str, since: int = 0, limit: int = 100) -> dict[str, Any]:
        params = {"since": since, "limit": limit}
        return _check(await self._collect.get(f"/v1/channels/{channel}/messages", params=params))
