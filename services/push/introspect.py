"""Ask auth whether a connect token is valid: one HTTP call per handshake, pooled."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from herald.errors import Unavailable

TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Identity:
    app_id: str
    user_id: str
    expires_at: float
    device: str | None = None
    publish: tuple[str, ...] = ()


class TokenChecker:
    def __init__(self, auth_url: str, service_token: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=auth_url,
            headers={"authorization": f"Bearer {service_token}"},
            timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def identity(self, token: str) -> Identity | None:
        """The token's identity, None if auth says it is not active; Unavailable if auth is down."""
        if len(token) > 512:
            return None
        try:
            response = await self._client.post("/v1/introspect", json={"token": token})
        except httpx.HTTPError as exc:
            raise Unavailable(f"auth unreachable: {exc.__class__.__name__}") from None
        if response.status_code != 200:
            raise Unavailable(f"auth answered {response.status_code} to introspection")
        body = response.json()
        if not body.get("active"):
            return None
        return Identity(
            body["app_id"], body["user_id"], body["exp"], body.get("device"), tuple(body.get("publish") or ())
        )

    async def close(self) -> None:
        await self._client.aclose()
