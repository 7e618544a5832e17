"""A service's app served twice, with and without one of its hot routes, so that a test
can send both the same request and compare the answers (``herald.web.hot``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from herald.ops.runtime import served
from herald.web.api import HeraldApi
from herald.web.hot import HotRoute


@dataclass
class Pair:
    fast: httpx.AsyncClient  # the app as served
    documented: httpx.AsyncClient  # the same app without the hot route
    endpoint: HotRoute

    async def both(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
        """The same POST to each: the hot route's answer, then the documented route's."""
        fast = await self.fast.post(path, content=body, headers=headers)
        documented = await self.documented.post(path, content=body, headers=headers)
        return fast, documented


@contextlib.asynccontextmanager
async def with_and_without(
    fast: HeraldApi, documented: HeraldApi, path: str, body_limit: int, base_url: str
) -> AsyncIterator[Pair]:
    """Serve ``fast`` as is and ``documented`` without its hot ``POST path``."""
    del documented.hot_routes[("POST", path)]
    endpoint = fast.hot_routes[("POST", path)]
    assert isinstance(endpoint, HotRoute)
    async with (
        _client(served(fast, body_limit), base_url) as a,
        _client(served(documented, body_limit), base_url) as b,
    ):
        yield Pair(a, b, endpoint)


def _client(app: object, base_url: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url=base_url)
