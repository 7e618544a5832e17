"""httpx responses that reference counting can free.

An ``httpx.AsyncClient`` response and its stream point at each other (``Response.stream``
is a ``BoundAsyncStream`` holding the response), with the request, its headers and
httpcore's pool request behind them: about 40 objects and 6 KB per request that only the
cyclic collector frees. A push node asks auth once per connect (token introspection) and
runs its young collections rarely (``GC_THRESHOLD``), so part of that garbage is promoted
and waits for a full collection: under reconnect churn RSS climbed between them (issue 18).
"""

from __future__ import annotations

import httpx

_READ = httpx.ByteStream(b"")


def unlink(response: httpx.Response) -> None:
    """Cut the response's cycle once its body was read (``json()``, ``content``): its
    stream, already consumed and closed, is replaced by an empty one."""
    response.stream = _READ
