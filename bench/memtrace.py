"""Compare tracemalloc snapshots a Herald process wrote (``HERALD_TRACEMALLOC=DIR``): what grew.

    python bench/memtrace.py DIR                 # every process in DIR: its 2nd snapshot against its last
    python bench/memtrace.py DIR --role push --top 15 --by traceback
    python bench/memtrace.py OLD.tracemalloc NEW.tracemalloc

For each process it prints the allocation sites (``lineno``) or whole tracebacks
(``traceback``) whose live memory grew the most between the two snapshots, with the
growth in KiB and in blocks, and the growth per minute (snapshots are ``HERALD_TRACEMALLOC_S``
apart). The first snapshot is skipped by default: it still holds the warm-up.
"""

from __future__ import annotations

import argparse
import json
import re
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path

NOISE = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"))


def series(directory: Path) -> dict[str, list[Path]]:
    """Snapshot files per process (``<role>-<pid>``), in order."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(directory.glob("*.tracemalloc")):
        match = re.match(r"(.+-\d+)-(\d+)\.tracemalloc$", path.name)
        if match:
            found[match.group(1)].append(path)
    return dict(found)


def compare(old: Path, new: Path, by: str, top: int, minutes: float | None) -> None:
    before = tracemalloc.Snapshot.load(str(old)).filter_traces(NOISE)
    after = tracemalloc.Snapshot.load(str(new)).filter_traces(NOISE)
    stats = after.compare_to(before, by)
    total_old = sum(s.size for s in before.statistics("filename"))
    total_new = sum(s.size for s in after.statistics("filename"))
    per = f", {(total_new - total_old) / 1024 / minutes:+.1f} KiB/min" if minutes else ""
    print(f"== {old.name} -> {new.name}: traced {total_old / 1024:.0f} -> {total_new / 1024:.0f} KiB{per}")
    for stat in stats[:top]:
        print(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks  (now {stat.size / 1024:.0f} KiB)")
        frames = stat.traceback.format(limit=8 if by == "traceback" else 1, most_recent_first=True)
        for line in frames:
            print(f"      {line.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a directory of snapshots, or two snapshot files")
    parser.add_argument("--role", help="only processes whose name starts with this (auth, collect, dispatch, push)")
    parser.add_argument("--by", choices=("lineno", "traceback", "filename"), default="lineno")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--skip", type=int, default=1, help="snapshots to skip at the start (warm-up)")
    parser.add_argument("--every-s", type=float, default=60.0, help="the HERALD_TRACEMALLOC_S of the run")
    args = parser.parse_args()
    if len(args.paths) == 2 and all(p.is_file() for p in args.paths):
        compare(args.paths[0], args.paths[1], args.by, args.top, None)
        return
    for name, files in series(args.paths[0]).items():
        if args.role and not name.startswith(args.role):
            continue
        files = files[min(args.skip, len(files) - 2) :] if len(files) > 2 else files
        if len(files) < 2:
            print(f"== {name}: fewer than two snapshots")
            continue
        compare(files[0], files[-1], args.by, args.top, (len(files) - 1) * args.every_s / 60)
        typed = [f for f in files if _types_of(f).exists()]
        if len(typed) >= 2:
            census(typed[0], typed[-1], args.top)


def _types_of(snapshot: Path) -> Path:
    return Path(str(snapshot).removesuffix(".tracemalloc") + ".types.json")


def census(old: Path, new: Path, top: int) -> None:
    """Live objects by type after a full collection (``<snapshot>.types.json``), the growth."""
    before_path, after_path = _types_of(old), _types_of(new)
    before, after = json.loads(before_path.read_text()), json.loads(after_path.read_text())
    blocks = f"{before['blocks']} -> {after['blocks']}"
    print(f"   {old.name} -> {new.name}, live after a full collection: allocated blocks {blocks}")
    grown = Counter(after["types"])
    grown.subtract(before["types"])
    for name, count in sorted(grown.items(), key=lambda kv: -abs(kv[1]))[:top]:
        if count:
            print(f"   {count:+8d} {name} (now {after['types'].get(name, 0)})")


if __name__ == "__main__":
    main()
