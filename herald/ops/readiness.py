"""What ``/readyz`` runs and says, shared by the HTTP services and the push node.

A failing check is logged with its full error, and the probe's answer stays generic: a
driver's error names hosts, ports, users and versions, which are for the operator's logs,
not for whoever can reach a load balancer's probe.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("herald.readiness")

ReadinessCheck = Callable[[], Awaitable[None]]

NOT_READY = "a dependency of this service is unavailable; the details are in its logs"


async def run_check(check: ReadinessCheck, name: str) -> bool:
    """Run one readiness check: True when it answers; a failure is logged in full, once per probe."""
    try:
        await check()
    except Exception as exc:
        log.warning("readiness: %s failed: %r", name, exc)
        return False
    return True


def check_name(check: ReadinessCheck) -> str:
    owner = getattr(check, "__self__", None)
    name = getattr(check, "__name__", "check")
    return f"{type(owner).__name__}.{name}" if owner is not None else name
