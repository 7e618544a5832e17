"""Screen connect tokens before asking auth: refuse what auth never issued, and remember
recent refusals.

A made-up token used to cost a request to auth and a store read there, each. A token of
the wrong shape (``herald.core.credentials.is_connect_token``) is refused on the node
with no request at all; a well-shaped one auth refused is remembered for
``REFUSALS_KEPT_S``, so the same token sent again costs a dictionary lookup. Nothing auth
refuses becomes valid later (unknown, revoked and expired tokens stay so), so the memory
is never wrong, only bounded. Answers auth could not give (``Unavailable``) are not
remembered.

Source addresses are remembered too (``SuspectAddresses``): one that sent more than
``SUSPECT_AFTER`` refused tokens within ``SUSPECT_WINDOW_S``, more refused than admitted,
is suspect, and its tokens wait in the token checker's low-priority lane. A flood of
made-up tokens of the right shape, which only auth can refuse, then queues behind
itself, while handshakes from other addresses keep most of auth's requests.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from herald.core.credentials import is_connect_token
from herald.ops import metrics
from herald.services.push.handshake import Identity
from herald.services.push.introspect import TokenChecker

# Refusals remembered at most: 10,000 entries of a 46-character token and a float, about
# 2 MB. Past it the least recently seen is forgotten (and would be asked again).
MAX_REFUSALS = 10_000
# How long a refusal is remembered: long enough to absorb a client retrying the same bad
# token in a loop, short enough that the memory stays small.
REFUSALS_KEPT_S = 60.0
# Addresses tracked at most (10,000 entries of an address and three numbers, about 2 MB);
# past it the least recently seen is forgotten.
MAX_ADDRESSES = 10_000
SUSPECT_WINDOW_S = 30.0
SUSPECT_AFTER = 20


class RefusalMemory:
    """A bounded, least-recently-used set of refused tokens, each kept ``kept_s`` seconds."""

    def __init__(self, most: int = MAX_REFUSALS, kept_s: float = REFUSALS_KEPT_S) -> None:
        self._most = most
        self._kept_s = kept_s
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def remember(self, token: str, now: float) -> None:
        self._until[token] = now + self._kept_s
        self._until.move_to_end(token)
        while len(self._until) > self._most:
            self._until.popitem(last=False)

    def refused(self, token: str, now: float) -> bool:
        until = self._until.get(token)
        if until is None:
            return False
        if until <= now:
            del self._until[token]
            return False
        self._until.move_to_end(token)
        return True


class SuspectAddresses:
    """Per source address, refused and admitted tokens within the current window."""

    def __init__(self, most: int = MAX_ADDRESSES, window_s: float = SUSPECT_WINDOW_S) -> None:
        self._most = most
        self._window_s = window_s
        # address -> [window start, refused, admitted]
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _entry(self, address: str, now: float) -> list[float]:
        entry = self._seen.get(address)
        if entry is None or now - entry[0] >= self._window_s:
            entry = self._seen[address] = [now, 0.0, 0.0]
        self._seen.move_to_end(address)
        while len(self._seen) > self._most:
            self._seen.popitem(last=False)
        return entry

    def note(self, address: str, admitted: bool, now: float) -> None:
        if address:
            self._entry(address, now)[2 if admitted else 1] += 1

    def suspect(self, address: str, now: float) -> bool:
        entry = self._seen.get(address)
        if entry is None or now - entry[0] >= self._window_s:
            return False
        return entry[1] > SUSPECT_AFTER and entry[1] > entry[2]


class TokenScreen:
    """``TokenChecker.identity`` behind the shape check, the refusal memory, and the
    low-priority lane for suspect addresses."""

    def __init__(self, checker: TokenChecker, clock: Callable[[], float] = time.monotonic) -> None:
        self._checker = checker
        self._clock = clock
        self.refusals = RefusalMemory()
        self.addresses = SuspectAddresses()

    async def identity(self, token: str, address: str = "") -> Identity | None:
        """The token's identity, None if it is not one; Unavailable if auth is down.
        ``address``: where the token came from (empty: unknown, never suspect)."""
        if not is_connect_token(token):
            metrics.push_tokens_screened.labels("malformed").inc()
            self.addresses.note(address, False, self._clock())
            return None
        if self.refusals.refused(token, self._clock()):
            metrics.push_tokens_screened.labels("refused_before").inc()
            self.addresses.note(address, False, self._clock())
            return None
        suspect = self.addresses.suspect(address, self._clock())
        if suspect:
            metrics.push_tokens_screened.labels("suspect_source").inc()
        identity = await self._checker.identity(token, low_priority=suspect)
        if identity is None:
            self.refusals.remember(token, self._clock())
        self.addresses.note(address, identity is not None, self._clock())
        return identity
