"""Requests to URLs an app chose (webhooks, publish hooks), kept off the private network when asked.

An operator running Herald next to internal services may not want an app's ``webhook_url``
or ``publish_hook_url`` to reach them (``http://10.0.0.5/admin``, the cloud metadata address
``169.254.169.254``, ``localhost``). With ``HERALD_WEBHOOK_BLOCK_PRIVATE=1`` the transport
of dispatch's webhook sender and of push nodes' publish hook (``PublicOnly``) resolves the
URL's host itself, refuses it when any address it resolves to is not globally routable
(private, loopback, link-local, shared, reserved, multicast, unspecified; IPv4-mapped IPv6
included), and then connects to the
address it checked, not to whatever a second lookup would return: a DNS answer that
changes between the check and the connection (DNS rebinding) gains nothing. The request
keeps its ``Host`` header, and for https its TLS server name, so virtual hosts and
certificates work as before.

It is off by default: tests and development post webhooks to the loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[list[str]]]


class PrivateAddressRefused(httpx.TransportError):
    """The URL's host is (or resolves to) an address this deployment keeps webhooks off."""


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, from the system resolver (without blocking the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PublicOnly(httpx.AsyncBaseTransport):
    """An httpx transport that only connects to globally routable addresses."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None, resolver: Resolve = resolve) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._resolve = resolver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self._resolve(host, port)]
            except OSError as exc:
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from exc
        if not addresses:
            raise httpx.ConnectError(f"{host} resolves to no address", request=request)
        refused = [str(address) for address in addresses if not is_public(address)]
        if refused:
            raise PrivateAddressRefused(
                f"{host} resolves to {', '.join(refused)}, not a public address "
                "(HERALD_WEBHOOK_BLOCK_PRIVATE=1 refuses those)",
                request=request,
            )
        if request.url.scheme == "https" and "sni_hostname" not in request.extensions:
            request.extensions["sni_hostname"] = host
        # The Host header was set from the original URL when the request was built.
        request.url = request.url.copy_with(host=str(addresses[0]))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
