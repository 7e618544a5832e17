"""Counts each MongoDB command a Herald service sends, for a benchmark run with
``--store-commands`` (``bench/common.py``'s ``StoreCommands`` puts this directory on the
services' PYTHONPATH and names where to write).

PyMongo's command monitoring sees every command and the documents it writes (each one
inserted; each id an update or delete statement names, or one); on SIGUSR2 the totals so
far are written to ``<dir>/<pid>.json``, so the benchmark can take them before and after
the window it measures. Not part of Herald: a listener costs PyMongo an event object per
command, so only these runs pay it.
"""

from __future__ import annotations

import os

_DIRECTORY = os.environ.get("HERALD_BENCH_STORE_COMMANDS")

if _DIRECTORY:
    import collections
    import json
    import signal
    from typing import Any

    from pymongo import monitoring

    _commands: collections.Counter[str] = collections.Counter()
    _documents: collections.Counter[str] = collections.Counter()

    class _Counting(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = event.command.get(event.command_name)
            key = f"{event.command_name} {target if isinstance(target, str) else ''}".strip()
            _commands[key] += 1
            for field in ("documents", "updates", "deletes"):
                for statement in event.command.get(field, ()):
                    _documents[key] += _touched(statement) if field != "documents" else 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    def _touched(statement: Any) -> int:
        """Documents an update or delete statement names: its ``_id: {$in: [...]}``, else one."""
        ids = statement.get("q", {}).get("_id") if isinstance(statement, dict) else None
        return len(ids["$in"]) if isinstance(ids, dict) and isinstance(ids.get("$in"), list) else 1

    def _write(signum: int, frame: Any) -> None:
        path = os.path.join(_DIRECTORY, f"{os.getpid()}.json")
        totals = {key: [count, _documents[key]] for key, count in _commands.items()}
        with open(path + ".tmp", "w") as out:
            json.dump(totals, out)
        os.replace(path + ".tmp", path)

    monitoring.register(_Counting())
    signal.signal(signal.SIGUSR2, _write)
