"""The ``herald`` command: ``herald dev`` (standalone) or ``herald auth|collect|dispatch|push``."""

from __future__ import annotations

import argparse
import importlib
import sys

from herald import logs
from herald.adapters import NEEDS, make_adapters
from herald.errors import ConfigError
from herald.runtime import run, run_parts
from herald.settings import ROLES, Settings


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
    return parser


def _run_service(role: str) -> int:
    settings = Settings.from_env(role)
    logs.configure(settings.log_level)
    adapters = make_adapters(settings, NEEDS[role])
    service = importlib.import_module(f"services.{role}.main")
    parts = [*adapters.parts(), *service.build(settings, adapters)]

    def started() -> None:
        print(f"herald {role} listening on {settings.host}:{settings.port}", file=sys.stderr, flush=True)

    return run(run_parts(parts, on_started=started))


def _run_dev(port_base: int) -> int:
    from herald import standalone

    settings = Settings.from_env("standalone")
    logs.configure(settings.log_level)
    parts, per_role, demo = standalone.build(settings, port_base)

    def started() -> None:
        print(standalone.banner(per_role, demo), flush=True)

    return run(run_parts(parts, on_started=started))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            return _run_dev(args.port_base)
        return _run_service(args.command)
    except ConfigError as exc:
        print(f"herald: configuration error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
