"""Hook URLs an app chooses (its webhook, its publish hook) pointed at the private network:
with HERALD_WEBHOOK_BLOCK_PRIVATE=1 they are refused at delivery time, on the address the
name resolves to, for publish hooks as for webhooks (issue 14). Signed deliveries carry
their timestamp, so a captured one is refused once outside the receiver's tolerance."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from herald.core import codec
from herald.messaging import webhooks
from herald.messaging.egress import PublicOnly
from herald.services.push.publish import PublishHook
from herald_client import Operator, Publisher
from tests.support.procs import Standalone, start_standalone
from tests.support.webhook_receiver import Receiver
from tests.support.ws import next_frame, open_ws

CANDIDATE = {"app_id": "a", "user_id": "ann", "conn_id": "c", "channel": "user:bob", "event": "chat", "data": 1}


def _resolving_to(*addresses: str) -> Any:
    async def resolve(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "address", ["10.0.0.5", "169.254.169.254", "127.0.0.1", "::1", "::ffff:192.168.0.1", "fd00::1", "100.64.0.1"]
)
async def test_a_publish_hook_resolving_to_a_private_address_is_never_called(address: str) -> None:
    called: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda request: called.append(request) or httpx.Response(200, json={"allow": True}))
    hook = PublishHook(transport=PublicOnly(inner, resolver=_resolving_to("93.184.216.34", address)))
    try:
        verdict = await hook.ask("app_1", "http://hooks.example.com/check", "secret", CANDIDATE, 64 * 1024)
    finally:
        await hook.close()
    assert verdict.allow is False and called == []


async def test_a_publish_hook_on_a_public_address_is_called_with_its_name() -> None:
    called: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda request: called.append(request) or httpx.Response(200, json={"allow": True}))
    hook = PublishHook(transport=PublicOnly(inner, resolver=_resolving_to("93.184.216.34")))
    try:
        verdict = await hook.ask("app_1", "http://hooks.example.com/check", "secret", CANDIDATE, 64 * 1024)
    finally:
        await hook.close()
    assert verdict.allow is True
    [request] = called
    assert request.url.host == "93.184.216.34"  # connected to the address that was checked
    assert request.headers["host"] == "hooks.example.com"


# --- on a running `herald dev` with HERALD_WEBHOOK_BLOCK_PRIVATE=1 ------------------------


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    process = start_standalone(tmp_path_factory.mktemp("block-private"), {"HERALD_WEBHOOK_BLOCK_PRIVATE": "1"})
    try:
        yield process
    finally:
        process.process.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.start()
    try:
        yield hook
    finally:
        await hook.close()


async def _hooked_app(dev: Standalone, **urls: str) -> Publisher:
    async with Operator(dev.auth_url, dev.admin_token) as operator:
        created = await operator.create_app(f"hooked-{uuid.uuid4().hex[:8]}")
        await operator.configure(created["app_id"], **urls)
    await asyncio.sleep(2.2)  # app configs are cached for up to 2 s
    return Publisher(dev.auth_url, dev.collect_url, created["api_key"])


async def _connected(dev: Standalone, publisher: Publisher, user: str) -> ClientConnection:
    ws = await open_ws(dev.ws_url, await publisher.token(user, publish=["user:*"]))
    await next_frame(ws, "welcome")
    return ws


async def test_a_publish_hook_on_the_loopback_refuses_the_publish_and_is_never_called(
    blocking: Standalone, receiver: Receiver
) -> None:
    async with await _hooked_app(blocking, publish_hook_url=receiver.url) as publisher:
        ws = await _connected(blocking, publisher, "ann")
        await ws.send(codec.dumps_text({"type": "publish", "seq": "1", "channel": "user:bob", "event": "e", "data": 1}))
        reply = await next_frame(ws, "reply")
        await ws.close()
    assert reply["error"]["code"] == "refused_by_hook"
    assert receiver.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_webhook_to_the_loopback_is_never_delivered(
    blocking: Standalone, receiver: Receiver, host: str
) -> None:
    url = receiver.url.replace("127.0.0.1", host)
    async with await _hooked_app(blocking, webhook_url=url) as publisher:
        ws = await _connected(blocking, publisher, "ann")  # user.online is an event
        await ws.close()
    where = url.split("/hooks")[0].removeprefix("http://")

    def refusals() -> list[str]:
        lines = blocking.process.log_path.read_text().splitlines()
        return [line for line in lines if where in line and "not a public address" in line]

    deadline = time.monotonic() + 10
    while not refusals() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert refusals(), f"no refused delivery to {where} in the log"
    assert receiver.requests == []


# --- replay --------------------------------------------------------------------------------


def test_a_captured_delivery_replayed_outside_the_tolerance_is_refused() -> None:
    body = b'{"type":"user.online","app_id":"a"}'
    headers = webhooks.signature_headers("whsec", body, now=1_767_225_600)
    signature = headers[webhooks.SIGNATURE_HEADER]
    assert signature.startswith("t=1767225600,v1=")
    assert webhooks.verify("whsec", body, signature, now=1_767_225_600 + 60)
    assert not webhooks.verify("whsec", body, signature, now=1_767_225_600 + webhooks.TOLERANCE_S + 1)
    assert not webhooks.verify("whsec", body + b" ", signature, now=1_767_225_600)  # the body is signed
    forged = signature.replace("t=1767225600", f"t={int(time.time())}")  # a fresh time on an old MAC
    assert not webhooks.verify("whsec", body, forged, now=time.time())
