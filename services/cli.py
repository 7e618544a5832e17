"""The ``herald`` command: ``herald dev`` (standalone) or ``herald auth|collect|dispatch|push``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from herald.adapters import NEEDS, make_adapters
from herald.core.errors import ConfigError
from herald.core.settings import ROLES, Settings
from herald.ops import admin, logs
from herald.ops import dlq as dlq_module
from herald.ops.collector import gc_parts
from herald.ops.heap import heap_parts
from herald.ops.memtrace import memtrace_parts
from herald.ops.runtime import run, run_parts
from herald.services.roles import BUILDERS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description="Herald WebSocket push service")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run all four services in one process (standalone, embedded parts)")
    dev.add_argument(
        "--port-base",
        type=int,
        default=8000,
        help="auth listens on BASE+1, collect +2, dispatch +3, push +4 (default 8000)",
    )
    for role in ROLES:
        sub.add_parser(role, help=f"run the {role} service (cluster mode, configured by HERALD_* variables)")
    status = sub.add_parser("status", help="print the cluster: nodes, connections, queue depths, per-app rates")
    status.add_argument(
        "--url",
        help="ask this push node's /ops/snapshot (default without HERALD_REDIS_URL/HERALD_AMQP_URL: herald dev's)",
    )
    bench = sub.add_parser(
        "bench", help="run the benchmark suite (scripts/bench of a source checkout), with progress", add_help=False
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to scripts/bench (--full, --only, --fuzz ...)")
    apps = sub.add_parser("apps", help="manage apps (tenants) through auth").add_subparsers(dest="apps", required=True)
    create = apps.add_parser("create", help="create an app and print its id and API key")
    create.add_argument("name")
    token = sub.add_parser("token", help="print a connect token for one user of an app")
    token.add_argument("app", help="app id or name (the demo app of `herald dev` is `demo`)")
    token.add_argument("user", help="user id")
    token.add_argument("--key", help="the app's API key (default: HERALD_APP_KEY, or the one `apps create` saved)")
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default HERALD_TOKEN_TTL_S on auth)")
    token.add_argument("--device", help="device label shown in presence")
    token.add_argument("--publish", action="append", help="a channel pattern the user may publish to (repeatable)")
    _dlq_parser(sub)
    return parser


def _dlq_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dlq = sub.add_parser(
        "dlq",
        help="dead letters: bus messages parked after too many failed deliveries (list, replay, drop)",
        description="Reads RabbitMQ when HERALD_AMQP_URL is set, else a running `herald dev` through --url.",
    )
    actions = dlq.add_subparsers(dest="dlq", required=True)
    listing = actions.add_parser("list", help="show the parked messages, oldest first, with the message ids inside")
    listing.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    for name, verb in (("replay", "send back to the queue they came from"), ("drop", "delete for good")):
        action = actions.add_parser(name, help=f"{verb}: the dead letters named, or --all")
        action.add_argument("ids", nargs="*", help="ids from `herald dlq list`")
        action.add_argument("--all", action="store_true", help="every dead letter (up to --limit)")
        action.add_argument("--limit", type=int, default=1000, help="act on at most this many (default 1000)")
    for action in (listing, *(actions.choices[name] for name in ("replay", "drop"))):
        action.add_argument(
            "--url",
            help="herald dev's dispatch, without HERALD_AMQP_URL (default: the one herald dev of "
            f"HERALD_DATA_DIR says, else {dlq_module.DEV_DISPATCH_URL})",
        )


def _run_service(role: str) -> int:
    settings = Settings.from_env(role)
    logs.configure(settings.log_level)
    adapters = make_adapters(settings, NEEDS[role])
    parts = [*adapters.parts(), *BUILDERS[role](settings, adapters)]
    parts += memtrace_parts(role, settings.tracemalloc_dir, settings.tracemalloc_s)
    parts += heap_parts(settings.malloc_trim_s)
    parts += gc_parts(role)

    def started() -> None:
        print(f"herald {role} listening on {settings.host}:{settings.port}", file=sys.stderr, flush=True)

    return run(run_parts(parts, on_started=started))


def _run_dev(port_base: int) -> int:
    from herald.services import standalone

    settings = Settings.from_env("standalone")
    logs.configure(settings.log_level)
    parts, per_role, demo = standalone.build(settings, port_base)
    parts += heap_parts(settings.malloc_trim_s)
    parts += gc_parts("standalone")

    def started() -> None:
        print(standalone.banner(per_role, demo), flush=True)

    return run(run_parts(parts, on_started=started))


def _run_bench(args: list[str]) -> int:
    """The suite lives in the source tree (bench/, scripts/bench), not in the package."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench"
    if not script.is_file():
        print("herald bench needs a source checkout of Herald (scripts/bench and bench/)", file=sys.stderr)
        return 2
    return subprocess.call([str(script), *args])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _run_bench(argv[1:])  # every option belongs to scripts/bench, --help included
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            return _run_dev(args.port_base)
        if args.command in ("status", "token"):
            return admin.run(args.command, args)
        if args.command == "apps":
            return admin.run(f"apps-{args.apps}", args)
        if args.command == "dlq":
            return admin.run(f"dlq-{args.dlq}", args)
        return _run_service(args.command)
    except ConfigError as exc:
        print(f"herald: configuration error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
