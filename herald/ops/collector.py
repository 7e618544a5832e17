"""The cyclic garbage collector kept off the hot paths once a service is up.

Every service allocates per request, per message or per connection, and CPython's
default thresholds (700, 10, 10) run a young collection every few hundred net
allocations and a full one whenever the long-lived objects grew by a quarter, each full
one walking every object of the process: the modules, FastAPI's and pydantic's schemas,
the drivers. In a push node holding thousands of connections that was 1.6 ms per connect
(bench/connections.py --connections 5000: 2,970 collections, 8.4 s of the node's CPU,
6.4 s in 22 full ones); frozen start-up objects and the thresholds below, 18 collections
and 1.2 s. In collect, bench/ingest.py's 20 s of single requests and batches: 0.60 s of
its 5.1 s of CPU in 1,047 collections (0.41 s in 8 full ones), settled 0.10 s. The
garbage the services make is mostly acyclic and freed by reference counting at once; a
young generation of 50,000 objects holds a few MB at most.
"""

from __future__ import annotations

import gc

from herald.ops.runtime import Part, nothing

# The collector's thresholds once the service is up (CPython's default: 700, 10, 10).
GC_THRESHOLD = (50_000, 20, 100)
# The processes that run with them: each measured faster and still flat under churn
# (bench/soak.py). dispatch keeps CPython's defaults: its collector took 5% of its CPU
# at 300 messages/s, most of it at start-up, and a short soak could not tell its memory
# slope with these thresholds from noise.
SETTLED_ROLES = frozenset({"auth", "collect", "push", "standalone"})


async def settle_gc() -> None:
    """Move the start-up objects out of the collector's sight (``gc.freeze``: modules,
    clients and settings live as long as the process) and collect young garbage less
    often (``GC_THRESHOLD``)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def gc_parts(role: str) -> list[Part]:
    """The last part of a service in ``SETTLED_ROLES``: it runs once all the others started."""
    return [Part("gc-settings", settle_gc, nothing)] if role in SETTLED_ROLES else []
