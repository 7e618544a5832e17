"""Riding out a MongoDB primary step-down: which driver errors to retry, and until when.

A replica set elects a new primary when the old one steps down or dies; for a few
seconds writes fail with "not primary", connections drop, and the driver's own single
retry (``retryWrites``, on by default) may fall in the same gap. The store tries again
itself with a short backoff, within ``HERALD_STORE_TIMEOUT_S`` from the first attempt,
and each attempt is bounded by what is left of it (the driver's client-side timeout,
``pymongo.timeout``). Past the deadline the caller gets ``Unavailable`` (collect answers
503), never a hang.

Worth retrying (``retryable``): connection failures (``ConnectionFailure``:
``AutoReconnect``, ``NotPrimaryError``, ``NetworkTimeout``), any error the server labels
``RetryableWriteError``, and the codes of a replica set changing primaries
(``NOT_PRIMARY_CODES``). Not retried: a write-concern timeout (``WTimeoutError``: the write
may be on the old primary, uncertain), duplicate keys, anything else: those are answers.

A retried write must be safe to make twice. The store's writes are, or are made so:
``$max``, ``$set`` with a filter and upserts by ``_id`` repeat harmlessly; an offset
counter raised twice leaves a gap, which readers already skip; inserting messages checks
which of them an earlier attempt already wrote (``MongoStore.insert_messages``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError, WTimeoutError

from herald.core.errors import Unavailable

log = logging.getLogger("herald.store")

T = TypeVar("T")

# Server error codes of an election or a shutdown in progress: the next primary will answer.
NOT_PRIMARY_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary (NotMaster)
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 0.5


def retryable(exc: BaseException) -> bool:
    """True for the errors of a primary changing hands, which a later attempt may not meet."""
    if isinstance(exc, WTimeoutError):
        return False  # the write may have been applied: not ours to repeat blindly
    if isinstance(exc, ConnectionFailure):
        return True
    if isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in NOT_PRIMARY_CODES


async def with_retries(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    deadline_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``attempt`` until it succeeds, fails for good, or ``deadline_s`` has passed."""
    deadline = clock() + deadline_s
    delay = FIRST_BACKOFF_S
    tries = 0
    while True:
        tries += 1
        remaining = deadline - clock()
        try:
            # Bounds one attempt, server selection and the driver's own retry included.
            with pymongo.timeout(max(remaining, 0.001)):
                return await attempt()
        except Exception as exc:
            if not retryable(exc):
                raise
            remaining = deadline - clock()
            if remaining <= delay:
                raise Unavailable(
                    f"MongoDB unavailable while {what} (gave up after {tries} attempts in {deadline_s:g} s): {exc}",
                    code="store_unavailable",
                ) from exc
            log.warning("MongoDB: %s failed (%s); trying again in %.2f s", what, exc.__class__.__name__, delay)
            await sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
