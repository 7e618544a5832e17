"""Control commands for push nodes: join, leave, kick. Pure encode and decode.

They travel in the nodes' own queues, ``{"control": [...]}`` beside the message batches,
so a node applies them in order with its messages: a member who joins a group before a
message is sent to it reads that message, because the join was queued to the node first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from herald.core import codec


@dataclass(frozen=True, slots=True)
class Join:
    """The user's live connections start reading ``channel`` after offset ``after``."""

    app_id: str
    user_id: str
    channel: str
    after: int


@dataclass(frozen=True, slots=True)
class Leave:
    app_id: str
    user_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class Kick:
    """Close the user's connections with 4003: all of them, or those using one token."""

    app_id: str
    user_id: str
    token_hash: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Barrier:
    """A node's marker to itself: when it comes back, everything queued to the node before
    it was sent has been consumed (``services.push.node.PushNode.barrier``)."""

    mark: int


Command = Join | Leave | Kick | Barrier


def encode(commands: list[Command]) -> bytes:
    return codec.dumps({"control": [_to_dict(command) for command in commands]})


def _to_dict(command: Command) -> dict[str, Any]:
    if isinstance(command, Join):
        return {
            "op": "join",
            "app": command.app_id,
            "user": command.user_id,
            "channel": command.channel,
            "after": command.after,
        }
    if isinstance(command, Leave):
        return {"op": "leave", "app": command.app_id, "user": command.user_id, "channel": command.channel}
    if isinstance(command, Barrier):
        return {"op": "barrier", "mark": command.mark}
    return {
        "op": "kick",
        "app": command.app_id,
        "user": command.user_id,
        "token": command.token_hash,
        "reason": command.reason,
    }


def decode(items: list[Any]) -> list[Command]:
    """Commands of a decoded body; an unknown or malformed one raises ValueError (a bug upstream)."""
    commands: list[Command] = []
    for item in items:
        try:
            op = item["op"]
            if op == "join":
                commands.append(Join(item["app"], item["user"], item["channel"], int(item["after"])))
            elif op == "leave":
                commands.append(Leave(item["app"], item["user"], item["channel"]))
            elif op == "kick":
                commands.append(Kick(item["app"], item["user"], item.get("token"), str(item.get("reason", ""))))
            elif op == "barrier":
                commands.append(Barrier(int(item["mark"])))
            else:
                raise ValueError(f"unknown control op {op!r}")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed control command: {exc}") from None
    return commands


def split_node_body(body: bytes) -> tuple[list[dict[str, Any]], list[Command]]:
    """A node queue body: its messages and its control commands (either may be empty)."""
    value = codec.loads(body)
    if not isinstance(value, dict):
        raise ValueError("node body is not an object")
    messages = value.get("messages", [])
    control = value.get("control", [])
    if not isinstance(messages, list) or not isinstance(control, list):
        raise ValueError("node body without message or control lists")
    return messages, decode(control)
