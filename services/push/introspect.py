"""Ask auth whether connect tokens are valid: the handshakes in flight share one request.

Each handshake waits for its token's answer; tokens arriving while earlier requests are
out are gathered and sent together (``POST /v1/introspect/batch``, answered from one
store query), at most ``MAX_BATCH`` per request and ``MAX_REQUESTS`` requests at once. A
lone handshake is sent on the next turn of the event loop, so batching adds no wait when
the node is quiet; under a connect storm the batches grow on their own, which is what
makes the HTTP client's and the store's cost per request, not per handshake.

Tokens from suspect sources (``low_priority``: an address that sent many refused tokens
lately, ``services.push.screen``) wait in a lane of their own, with ``MAX_LOW_REQUESTS``
requests of its own beside the ordinary lane's: a flood of made-up tokens queues behind
itself, and the other handshakes keep their request to auth.

An auth that does not know the batch path yet (404, an older version during a rolling
upgrade) is asked one token at a time, and the batch path is tried again a minute later.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import orjson

from herald.core.errors import Unavailable
from herald.core.waiting import wait_within
from herald.services.push.auth_link import Answer, AuthLink, LinkError
from herald.services.push.handshake import Identity
from herald.web.responses import unlink

log = logging.getLogger("herald.push")

TIMEOUT_S = 3.0
# Tokens per request: auth refuses more (MAX_INTROSPECT_BATCH there).
MAX_BATCH = 256
# Ordinary requests out at once; further tokens wait and go together in the next one.
# One: with four out, each came back before many handshakes had gathered, and auth and its
# store did more than twice the work per handshake (same-run pairs at 4,000 connections,
# docs/BENCHMARKS.md: auth 0.63-0.72 -> 0.25-0.31 ms each), for no faster handshakes.
MAX_REQUESTS = 1
# Requests carrying tokens of suspect sources at once (their own lane), and their tokens at
# most: auth answers a request at a time per connection, so a big batch of made-up tokens
# would hold the ordinary requests queued behind it at auth.
MAX_LOW_REQUESTS = 1
MAX_LOW_BATCH = 32
# A low-priority request starts at most this often: suspect tokens cost auth and its
# store at most MAX_LOW_BATCH / LOW_INTERVAL_S (320) lookups a second per node.
LOW_INTERVAL_S = 0.1
# Suspect tokens waiting at most; past it one more is answered Unavailable (503
# ``try_later``) at once rather than held: the lane drains 320 a second.
MAX_LOW_WAITING = 1024
MAX_TOKEN_LENGTH = 512
# After auth answered 404 to the batch path, ask one token at a time for this long.
SINGLE_RETRY_S = 60.0


def identity_of(answer: object) -> Identity | None:
    """The identity in one introspection answer; None unless it says active.

    Raises Unavailable for an answer that is not one (auth misbehaving must not let a
    token in, nor crash the handshake)."""
    if not isinstance(answer, dict):
        raise Unavailable("auth answered introspection with something that is not an answer")
    if answer.get("active") is not True:
        return None
    try:
        return Identity(
            str(answer["app_id"]),
            str(answer["user_id"]),
            float(answer["exp"]),
            answer.get("device"),
            tuple(answer.get("publish") or ()),
        )
    except (KeyError, TypeError, ValueError):
        raise Unavailable("auth answered introspection without an identity") from None


class TokenChecker:
    def __init__(self, auth_url: str, service_token: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """Requests go through a lean keep-alive link (``AuthLink``); tests that play auth
        without sockets pass an httpx ``transport`` instead."""
        headers = {"authorization": f"Bearer {service_token}"}
        self._link = AuthLink(auth_url, headers, TIMEOUT_S, (MAX_REQUESTS + MAX_LOW_REQUESTS) * 2)
        self._client = (
            httpx.AsyncClient(base_url=auth_url, headers=headers, timeout=TIMEOUT_S, transport=transport)
            if transport is not None
            else None
        )
        self._waiting: dict[str, list[asyncio.Future[Identity | None]]] = {}
        self._waiting_low: dict[str, list[asyncio.Future[Identity | None]]] = {}
        self._in_flight = 0
        self._low_in_flight = 0
        self._low_next = 0.0  # when the next low-priority request may start (monotonic)
        self._low_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._scheduled = False
        self._single_until = 0.0
        self._requests: set[asyncio.Task[None]] = set()

    async def identity(self, token: str, low_priority: bool = False) -> Identity | None:
        """The token's identity, None if auth says it is not active; Unavailable if auth is down."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        if low_priority and len(self._waiting_low) >= MAX_LOW_WAITING and token not in self._waiting_low:
            raise Unavailable("too many unverified tokens from suspect sources; retry later", code="try_later")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Identity | None] = loop.create_future()
        (self._waiting_low if low_priority else self._waiting).setdefault(token, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._pump)
        # Waiting for a free request slot counts too: a hung auth must not hold handshakes
        # longer than about two request timeouts.
        return await wait_within(future, 2 * TIMEOUT_S, _late)

    def _pump(self) -> None:
        """Send what waits, in as few requests as the bounds allow: the ordinary lane first."""
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while not self._closed:
            if self._waiting and self._in_flight - self._low_in_flight < MAX_REQUESTS:
                waiting, low = self._waiting, False
            elif self._waiting_low and self._low_in_flight < MAX_LOW_REQUESTS:
                wait_s = self._low_next - time.monotonic()
                if wait_s > 0:
                    if self._low_timer is None:
                        self._low_timer = loop.call_later(wait_s, self._low_turn)
                    break
                self._low_next = time.monotonic() + LOW_INTERVAL_S
                waiting, low = self._waiting_low, True
            else:
                break
            most = MAX_LOW_BATCH if low else MAX_BATCH
            batch = {token: waiting.pop(token) for token in list(waiting)[:most]}
            self._in_flight += 1
            self._low_in_flight += low
            task = loop.create_task(self._ask(batch, low), name="introspect")
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    def _low_turn(self) -> None:
        self._low_timer = None
        self._pump()

    async def _ask(self, batch: dict[str, list[asyncio.Future[Identity | None]]], low: bool = False) -> None:
        try:
            try:
                answers = await self._introspect(list(batch))
            except Exception as exc:
                if not isinstance(exc, Unavailable):
                    log.exception("introspection failed")
                    exc = Unavailable("introspection failed on this node")
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(Unavailable(exc.message, code=exc.code))
                return
            for futures, answer in zip(batch.values(), answers, strict=True):
                for future in futures:
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._in_flight -= 1
            self._low_in_flight -= low
            if (self._waiting or self._waiting_low) and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._pump)

    async def _introspect(self, tokens: list[str]) -> list[Identity | None]:
        if time.monotonic() >= self._single_until:
            body = await self._post("/v1/introspect/batch", {"tokens": tokens})
            if body is not None:
                results = body.get("results") if isinstance(body, dict) else None
                if not isinstance(results, list) or len(results) != len(tokens):
                    raise Unavailable("auth answered a batch introspection with the wrong number of results")
                return [identity_of(answer) for answer in results]
            self._single_until = time.monotonic() + SINGLE_RETRY_S
        answers = await asyncio.gather(*(self._post("/v1/introspect", {"token": token}) for token in tokens))
        if any(answer is None for answer in answers):
            raise Unavailable("auth answered 404 to introspection")
        return [identity_of(answer) for answer in answers]

    async def _post(self, path: str, body: dict[str, object]) -> object:
        """The decoded answer; None for a 404 (a path this auth does not have)."""
        answer = await self._send(path, orjson.dumps(body))
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise Unavailable(f"auth answered {answer.status} to introspection")
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            raise Unavailable("auth answered introspection with something that is not JSON") from None

    async def _send(self, path: str, body: bytes) -> Answer:
        if self._client is None:
            try:
                return await self._link.post(path, body)
            except LinkError as exc:
                raise Unavailable(f"auth unreachable: {exc}") from None
        try:
            response = await self._client.post(path, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise Unavailable(f"auth unreachable: {exc.__class__.__name__}") from None
        try:
            return Answer(response.status_code, response.content)
        finally:
            unlink(response)

    async def close(self) -> None:
        self._closed = True
        if self._low_timer is not None:
            self._low_timer.cancel()
        requests = list(self._requests)
        for task in requests:
            task.cancel()
        await asyncio.gather(*requests, return_exceptions=True)
        await self._link.close()
        if self._client is not None:
            await self._client.aclose()


def _late() -> Unavailable:
    return Unavailable("auth did not answer introspection in time")
