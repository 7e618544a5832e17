"""The subscriber's timing decisions as plain functions: no socket, no clock, no randomness
of their own, so the tests feed them numbers and the connection code stays about I/O."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

# A token, or a function (plain or async) that returns a fresh one each time it is called.
TokenSource = str | Callable[[], str | Awaitable[str]]

# Refresh errors the server answers with the connection unchanged: worth another try.
REFRESH_ERRORS = frozenset({"invalid_token", "token_mismatch", "auth_unavailable"})
# A retried refresh must reach the server a little before exp, or it lands after the 4001.
REFRESH_MARGIN_S = 0.5
REFRESH_RETRY_MAX_S = 8.0


def backoff_delay(attempt: int, low_s: float, high_s: float, jitter: float) -> float:
    """Exponential backoff with jitter (``jitter`` in [0, 1)): after the n-th failed attempt
    in a row wait between half and all of ``low * 2**n``, capped at ``high``. The jitter
    keeps a node's clients from all coming back in the same millisecond."""
    ceiling = min(high_s, low_s * 2.0 ** min(attempt, 20))
    return ceiling * (0.5 + jitter / 2)


def refresh_retry_delay(attempt: int, remaining_s: float) -> float | None:
    """How long to wait before retrying a refused refresh, or None when no retry can land
    before exp: the server then closes with 4001 and the subscriber reconnects instead."""
    delay = min(REFRESH_RETRY_MAX_S, 0.5 * 2.0**attempt, remaining_s / 2)
    return delay if remaining_s - delay > REFRESH_MARGIN_S else None


async def resolve_token(source: TokenSource) -> str:
    """The token itself, or what the function returns (awaited when it is a coroutine)."""
    if isinstance(source, str):
        return source
    token = source()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str) or not token:
        raise TypeError(f"the token function returned {type(token).__name__}, not a token string")
    return token
