"""Webhook URLs kept off the private network: which addresses count as public, and a
transport that checks the address it connects to (resolution injected, no sockets)."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from herald.messaging.egress import PrivateAddressRefused, PublicOnly, is_public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared (carrier-grade NAT)
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
    ],
)
def test_private_loopback_link_local_and_the_like_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_globally_routable_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


class Recorder(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(204)


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def _post(transport: httpx.AsyncBaseTransport, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport) as client:
        return await client.post(url, content=b"{}")


async def test_a_public_host_is_reached_at_the_address_that_was_checked() -> None:
    inner = Recorder()

    await _post(PublicOnly(inner, resolving_to("93.184.215.14")), "https://hooks.example/in?x=1")

    [request] = inner.requests
    assert request.url.host == "93.184.215.14" and request.url.path == "/in" and request.url.query == b"x=1"
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("http://127.0.0.1:8080/in", ()),
        ("http://[::1]/in", ()),
        ("http://internal.example/in", ("10.0.0.5",)),
        ("http://sneaky.example/in", ("93.184.215.14", "127.0.0.1")),  # one private answer is enough
    ],
)
async def test_a_host_that_is_or_resolves_to_a_private_address_is_refused(url: str, addresses: tuple[str, ...]) -> None:
    inner = Recorder()

    with pytest.raises(PrivateAddressRefused):
        await _post(PublicOnly(inner, resolving_to(*addresses)), url)
    assert inner.requests == []


async def test_a_host_that_does_not_resolve_is_a_connection_error_worth_retrying() -> None:
    async def fails(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(httpx.ConnectError):
        await _post(PublicOnly(Recorder(), fails), "http://gone.example/in")
