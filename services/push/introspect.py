"""Ask auth whether connect tokens are valid: the handshakes in flight share one request.

Each handshake waits for its token's answer; tokens arriving while earlier requests are
out are gathered and sent together (``POST /v1/introspect/batch``, answered from one
store query), at most ``MAX_BATCH`` per request and ``MAX_REQUESTS`` requests at once. A
lone handshake is sent on the next turn of the event loop, so batching adds no wait when
the node is quiet; under a connect storm the batches grow on their own, which is what
makes the HTTP client's and the store's cost per request, not per handshake.

An auth that does not know the batch path yet (404, an older version during a rolling
upgrade) is asked one token at a time, and the batch path is tried again a minute later.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from herald.services.push.handshake import Identity

from herald.core.errors import Unavailable
from herald.web.responses import unlink

TIMEOUT_S = 3.0
# Tokens per request: auth refuses more (MAX_INTROSPECT_BATCH there).
MAX_BATCH = 256
# Requests out at once; further tokens wait and go together in the next one.
MAX_REQUESTS = 4
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
        self._client = httpx.AsyncClient(
            base_url=auth_url,
            headers={"authorization": f"Bearer {service_token}"},
            timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=MAX_REQUESTS * 2, max_keepalive_connections=MAX_REQUESTS),
            transport=transport,
        )
        self._waiting: dict[str, list[asyncio.Future[Identity | None]]] = {}
        self._in_flight = 0
        self._scheduled = False
        self._single_until = 0.0
        self._requests: set[asyncio.Task[None]] = set()

    async def identity(self, token: str) -> Identity | None:
        """The token's identity, None if auth says it is not active; Unavailable if auth is down."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Identity | None] = loop.create_future()
        self._waiting.setdefault(token, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._pump)
        try:
            # Waiting for a free request slot counts too: a hung auth must not hold
            # handshakes longer than about two request timeouts.
            return await asyncio.wait_for(future, 2 * TIMEOUT_S)
        except TimeoutError:
            raise Unavailable("auth did not answer introspection in time") from None

    def _pump(self) -> None:
        """Send what waits, in as few requests as the bounds allow."""
        self._scheduled = False
        while self._waiting and self._in_flight < MAX_REQUESTS:
            tokens = list(self._waiting)[:MAX_BATCH]
            batch = {token: self._waiting.pop(token) for token in tokens}
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._ask(batch), name="introspect")
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _ask(self, batch: dict[str, list[asyncio.Future[Identity | None]]]) -> None:
        try:
            try:
                answers = await self._introspect(list(batch))
            except Unavailable as exc:
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
            if self._waiting and not self._scheduled:
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
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"auth unreachable: {exc.__class__.__name__}") from None
        try:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise Unavailable(f"auth answered {response.status_code} to introspection")
            try:
                return response.json()
            except ValueError:
                raise Unavailable("auth answered introspection with something that is not JSON") from None
        finally:
            unlink(response)  # one per connect: no cyclic garbage left for the rare full collections

    async def close(self) -> None:
        for task in list(self._requests):
            task.cancel()
        await self._client.aclose()
