"""Failed authentications with a fixed credential (operator, service), counted per source.

The operator token opens every app. A token of 32+ characters cannot be guessed, but an
endpoint that answers wrong guesses as fast as they come still invites trying, and fills
logs. ``FailureThrottle`` counts wrong tokens per source address in a fixed window: after
``max_failures`` in ``window_s``, that source is answered 429 (``Retry-After`` until the
window ends) without its token being compared at all. Correct tokens from other sources
are not affected.

Bounds: at most ``max_sources`` addresses are tracked (10,000 by default, about 1 MB); past
that the oldest entry is forgotten, so a flood from many addresses costs bounded memory
and each of them still gets only ``max_failures`` guesses per window before it is
forgotten. The source is the TCP peer: behind a proxy it is the proxy, and the operator's
calls through it are throttled together with everyone else's failures (call auth directly,
from inside the network, for operator work).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# 10 wrong tokens a minute per source: a person mistyping is never stopped, a script is
# held to 14,400 guesses a day against a 192-bit secret.
MAX_FAILURES = 10
WINDOW_S = 60.0
MAX_SOURCES = 10_000


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class FailureThrottle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._max_sources = max_sources
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def blocked_for(self, source: str) -> float:
        """Seconds until ``source`` may try again; 0 when it may now."""
        window = self._windows.get(source)
        if window is None:
            return 0.0
        left = window.started + self._window_s - self._clock()
        if left <= 0:
            del self._windows[source]
            return 0.0
        return left if window.failures >= self._max_failures else 0.0

    def failed(self, source: str) -> None:
        """Count one wrong credential from ``source``."""
        now = self._clock()
        window = self._windows.get(source)
        if window is None or now - window.started >= self._window_s:
            window = _Window(now, 0)
        window.failures += 1
        self._windows[source] = window
        self._windows.move_to_end(source)
        while len(self._windows) > self._max_sources:
            self._windows.popitem(last=False)
