"""Reading and checking ``HERALD_*`` values: each helper names the variable in its error,
so a typo stops start-up with a message that says where it is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from herald.core.errors import ConfigError

T = TypeVar("T", int, float)

# Operator and service tokens are bearer secrets compared on every call: long enough that
# guessing is hopeless (32 characters of token_urlsafe are 192 bits).
MIN_SECRET_LENGTH = 32


class Env:
    """The variables of one process; an empty value counts as unset."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._values.get(name)
        return default if value is None or value == "" else value

    def text(self, name: str, default: str) -> str:
        return self.get(name, default) or default

    def parse(self, name: str, default: str, cast: Callable[[str, str], Any]) -> Any:
        return cast(name, self.text(name, default))

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        return integer(name, self.text(name, str(default)), lo, hi)

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        return number(name, self.text(name, f"{default:g}"), lo, hi)

    def flag(self, name: str) -> bool:
        """0 or 1, unset meaning 0."""
        return self.integer(name, 0, 0, 1) == 1


def integer(name: str, raw: str, lo: int, hi: int) -> int:
    return _bounded(name, raw, int, "an integer", lo, hi)


def number(name: str, raw: str, lo: float, hi: float) -> float:
    return _bounded(name, raw, float, "a number", lo, hi)


def _bounded(name: str, raw: str, parse: Callable[[str], T], kind: str, lo: T, hi: T) -> T:
    """``raw`` parsed, within ``lo..hi``; a ConfigError naming the variable otherwise."""
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected {kind}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: {value} is outside {lo}..{hi}")
    return value


def origins(raw: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"HERALD_CORS_ORIGINS: {origin!r} is not * or an http(s):// origin")
    return origins


def url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    if not raw.startswith(tuple(f"{s}://" for s in schemes)):
        raise ConfigError(f"{name}: expected a {'/'.join(schemes)}:// URL, got {raw!r}")
    return raw


def urls(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    """A comma-separated list of URLs, each checked; kept as given (``Settings.amqp_urls`` splits it)."""
    parts = [part.strip() for part in raw.split(",")]
    if not all(parts):
        raise ConfigError(f"{name}: an empty entry in {raw!r}")
    for part in parts:
        url(name, part, schemes)
    return ",".join(parts)


def choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(choices)}")
    return value


def addresses(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port`` entries, comma-separated (IPv6 hosts in brackets: ``[::1]:26379``)."""
    found = []
    for entry in (part.strip() for part in raw.split(",")):
        host, colon, port = entry.rpartition(":")
        host = host.strip("[]")
        if not entry or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: {entry!r} is not host:port")
        found.append((host, int(port)))
    return tuple(found)


def check_secret(name: str, value: str) -> None:
    """An operator or service token that is set must be long: a short one can be guessed."""
    if value and len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{name}: {len(value)} characters; use at least {MIN_SECRET_LENGTH} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
