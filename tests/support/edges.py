"""What the security suite (tests/security) shares: `herald dev` with chosen settings, and
the node's counters read from its /metrics page."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import Standalone, start_standalone


@contextlib.contextmanager
def running(directory: Path, env: dict[str, str] | None = None) -> Iterator[Standalone]:
    """`herald dev` with ``env``; it must stop cleanly (exit 0 on SIGTERM) afterwards."""
    herald = start_standalone(directory, {"HERALD_LOG_LEVEL": "INFO", **(env or {})})
    try:
        yield herald
    finally:
        code = herald.process.stop()
        assert code == 0, f"herald dev exited with {code} on SIGTERM:\n{herald.process.log_tail()}"


async def metric(standalone: Standalone, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{standalone.push_http_url}/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
