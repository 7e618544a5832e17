"""What the directory's Redis keys hold: the values of the conns hashes and of a node's own
records, and the scores of the online sets (the key names are ``herald.core.names``)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.typing import EncodableT, FieldT

from herald.adapters.directory.base import Presence
from herald.core import codec

# The online set's score for a user whose connections do not expire (epoch ms, year
# 2286): above any "now", so readers of earlier versions, which took users with a
# future score as online, still list them.
ONLINE_UNTIL_REMOVED = 10**13

User = tuple[str, str]  # (app_id, user_id)


def encode_conn(node_id: str, conn: Presence) -> str:
    return codec.dumps_text([node_id, conn.since, conn.device])


def decode_conn(value: str) -> tuple[str, float, str | None]:
    """(node_id, since, device) of a conns hash value. A bare node id is the layout before
    presence carried device and since: still routable during a rolling upgrade."""
    if not value.startswith("["):
        return value, 0.0, None
    node_id, since, device = codec.loads(value)
    return node_id, since, device


def by_user(conns: Sequence[Presence]) -> dict[User, list[Presence]]:
    grouped: dict[User, list[Presence]] = {}
    for conn in conns:
        grouped.setdefault((conn.app_id, conn.user_id), []).append(conn)
    return grouped


def pair(app_id: str, name: str) -> str:
    # The value format of node_conns_key and node_channels_key: app ids hold no tab.
    return f"{app_id}\t{name}"


def unpair(value: str) -> tuple[str, str]:
    app_id, name = value.split("\t", 1)
    return app_id, name


def node_conns(conns: Sequence[Presence]) -> dict[FieldT, EncodableT]:
    """A node's own record of its connections: conn id -> app and user."""
    return {conn.conn_id: pair(conn.app_id, conn.user_id) for conn in conns}
