"""What a client may publish from its socket: channel patterns carried by its connect token.

Patterns are shell-style (``fnmatch``, case-sensitive): ``group:room-*``, ``user:*``,
``broadcast``. No pattern, no publishing: the default is a receive-only connection, as
before clients could publish. A group needs membership as well (checked by the node).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from herald.core.errors import BadRequest

MAX_PATTERNS = 32
PATTERN_RE = re.compile(r"^(broadcast|user:[A-Za-z0-9_.@:+=\-*?]{1,128}|group:[A-Za-z0-9_.:\-*?]{1,128})$")


def check_patterns(patterns: Any) -> tuple[str, ...]:
    """Refuse a pattern that could never match a channel, so a typo fails at issue time."""
    if not isinstance(patterns, list | tuple) or len(patterns) > MAX_PATTERNS:
        raise BadRequest(f"`publish` is a list of at most {MAX_PATTERNS} channel patterns", code="invalid_publish")
    for pattern in patterns:
        if not isinstance(pattern, str) or not PATTERN_RE.fullmatch(pattern):
            raise BadRequest(
                "publish patterns look like channels, with * and ?: group:room-*, user:*, broadcast",
                code="invalid_publish",
                details={"pattern": pattern if isinstance(pattern, str) else repr(pattern)},
            )
    return tuple(dict.fromkeys(patterns))


def may_publish(patterns: Iterable[str], channel: str) -> bool:
    return any(fnmatchcase(channel, pattern) for pattern in patterns)


def first_refusal(patterns: Sequence[str], channel: str, member_of: Collection[str]) -> tuple[str, str] | None:
    """Why a client may not publish on ``channel`` (code, message), or None if it may."""
    if not may_publish(patterns, channel):
        return "forbidden_channel", f"your token does not allow publishing to {channel}"
    if channel.startswith("group:") and channel not in member_of:
        return "not_a_member", f"only members may publish to {channel}"
    return None
