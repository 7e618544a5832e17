"""The long schemathesis run against auth and collect (``scripts/bench --fuzz``).

Generates many more requests per operation than the CI test (tests/fuzz) from each
service's own /openapi.json, and checks every response against it: no 5xx, and no status,
content type, header or body the document does not declare. Prints one JSON line with
the cases and failures per service, and the failures themselves on stderr; exits 1 if
anything failed. Loopback only; bounded by --max-examples (and --max-time when given).

    python bench/fuzz.py                          # starts `herald dev` itself; 500 examples per operation
    python bench/fuzz.py --max-examples 1000 --seed 7 --max-time 600
    python bench/fuzz.py --auth http://127.0.0.1:8001 --collect http://127.0.0.1:8002 \
        --admin-token ... --service-token ...     # a Herald already running
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import schemathesis

from tests.support.openapi_fuzz import CHECKS, PHASES, fuzz, targets
from tests.support.procs import start_standalone


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=500, help="per operation and phase (default 500)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--max-time",
        type=int,
        default=0,
        help="seconds per service: after one pass, keep fuzzing (new cases) until then (default 0: one pass)",
    )
    parser.add_argument("--services", default="auth,collect", help="comma-separated (default auth,collect)")
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma-separated schemathesis checks")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated (default all)")
    running = parser.add_argument_group("a Herald already running (default: start `herald dev` in a temp dir)")
    running.add_argument("--auth", help="auth's base URL")
    running.add_argument("--collect", help="collect's base URL")
    running.add_argument("--admin-token", help="HERALD_ADMIN_TOKEN")
    running.add_argument("--service-token", help="HERALD_SERVICE_TOKEN")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    given = (args.auth, args.collect, args.admin_token, args.service_token)
    if any(given) and not all(given):
        print("fuzz: --auth, --collect, --admin-token and --service-token go together", file=sys.stderr)
        return 2
    wanted = args.services.split(",")
    if all(given):
        return _run(args, wanted, args.auth, args.collect, args.admin_token, args.service_token, "running")
    with tempfile.TemporaryDirectory(prefix="herald-fuzz-") as tmp:
        herald = start_standalone(Path(tmp), {"HERALD_LOG_LEVEL": "WARNING"})
        try:
            secrets = json.loads((herald.data_dir / "dev-secrets.json").read_text())
            return _run(
                args,
                wanted,
                herald.auth_url,
                herald.collect_url,
                herald.admin_token,
                secrets["service_token"],
                "standalone",
            )
        finally:
            herald.process.stop()


def _run(
    args: argparse.Namespace, wanted: list[str], auth: str, collect: str, admin: str, service: str, target: str
) -> int:
    result: dict = {
        "metric": "openapi_fuzz",
        "target": target,
        "schemathesis": schemathesis.__version__,
        "seed": args.seed,
        "max_examples": args.max_examples,
        "services": {},
    }
    failed = False
    for job in targets(auth, collect, admin, service):
        if job.service not in wanted:
            continue
        report = fuzz(
            job,
            max_examples=args.max_examples,
            seed=args.seed,
            checks=tuple(args.checks.split(",")),
            phases=tuple(args.phases.split(",")),
            max_time_s=args.max_time or None,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        result["services"][job.service] = report.summary()
        for line in report.failures + report.errors:
            print(f"[{job.service}] {line}", file=sys.stderr)
        failed = failed or not report.ok
    result["cases"] = sum(s["cases"] for s in result["services"].values())
    result["failures"] = sum(s["failures"] + s["errors"] for s in result["services"].values())
    print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
