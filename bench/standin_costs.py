"""What the MongoDB-wire stand-in (nx-27017) spends per command: the part of a benchmark's
store CPU that is the stand-in's own way of working, not Herald's requests.

Measured on a fresh stand-in, from its process's CPU (``/proc``), over ``--commands``
commands of each kind, each naming ``--ids`` documents (a connect batch or a group
commit's size):

- ``find`` by ``_id: {$in: [...]}`` on a collection of ``--docs`` documents, without and
  with a TTL index on ``expires_at``: the stand-in expires documents when a collection is
  read (mongod does it in the background about once a minute), so each read of a TTL
  collection scans it. Herald's connect tokens live in one (DESIGN: TTL indexes, and
  ``expires_at > now`` filters as well), and auth reads it once per introspection batch.
- ``insert_many`` and ``update_many`` (``$set`` over ``_id: {$in}``) of that many documents:
  a message's writes (its document, its counter, its published mark, its status, its
  delivery record) are of these kinds.

    python bench/standin_costs.py
    python bench/standin_costs.py --docs 4000 --ids 14 --commands 300
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import tempfile
from pathlib import Path
from typing import Any

import common
from common import emit, progress
from pymongo import ASCENDING, AsyncMongoClient

from tests.support.servers import MongoWire


async def measure(url: str, pid: int, docs: int, ids: int, commands: int) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    costs: dict[str, float] = {}
    try:
        for name, ttl in (("plain", False), ("ttl", True)):
            collection = client.bench[name]
            if ttl:
                await collection.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
            await collection.insert_many([{"_id": f"k{n}", "expires_at": expires, "p": "a"} for n in range(docs)])

            def names(round_: int) -> list[str]:
                return [f"k{(round_ * ids + n) % docs}" for n in range(ids)]

            before = common.cpu_s(pid)
            for round_ in range(commands):
                [doc async for doc in collection.find({"_id": {"$in": names(round_)}}, batch_size=ids)]
            costs[f"find_{name}_ms"] = (common.cpu_s(pid) - before) / commands * 1000
            before = common.cpu_s(pid)
            for round_ in range(commands):
                await collection.update_many({"_id": {"$in": names(round_)}}, {"$set": {"p": f"b{round_}"}})
            costs[f"update_many_{name}_ms"] = (common.cpu_s(pid) - before) / commands * 1000
            before = common.cpu_s(pid)
            for round_ in range(commands):
                batch = [{"_id": f"n{round_}-{n}", "expires_at": expires} for n in range(ids)]
                await collection.insert_many(batch)
            costs[f"insert_many_{name}_ms"] = (common.cpu_s(pid) - before) / commands * 1000
    finally:
        await client.close()
    return {key: round(value, 3) for key, value in costs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=4000, help="documents in each collection")
    parser.add_argument("--ids", type=int, default=14, help="documents each command names")
    parser.add_argument("--commands", type=int, default=300, help="commands of each kind")
    args = parser.parse_args()
    docs, ids, commands = min(args.docs, 200_000), max(1, min(args.ids, 1000)), max(1, min(args.commands, 10_000))
    with common.deadline(600, "stand-in costs"), tempfile.TemporaryDirectory() as tmp:
        server = MongoWire(Path(tmp) / "mongo")
        server.start()
        try:
            assert server.process is not None
            progress(f"stand-in: {commands} commands of each kind naming {ids} of {docs} documents")
            costs = asyncio.run(measure(server.url, server.process.pid, docs, ids, commands))
        finally:
            server.stop()
    emit(
        {
            "bench": "standin_costs",
            **common.machine(),
            "versions": common.versions(),
            "metric": "standin_cpu_ms_per_command",
            "docs": docs,
            "ids_per_command": ids,
            "commands": commands,
            **costs,
        }
    )


if __name__ == "__main__":
    main()
