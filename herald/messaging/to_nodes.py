"""Send control commands (join, leave, kick) to the push nodes that hold a user's connections.

Used by collect (groups, kick) and auth (revocation). The directory says which nodes hold
the user; each gets the commands in its own queue, confirmed by the broker before the
caller answers, so "204" means every node holding the user has the command queued.
"""

from __future__ import annotations

from collections.abc import Sequence

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.core.commands import Command, encode


async def send_to_user_nodes(
    directory: Directory, bus: Bus, app_id: str, user_id: str, commands: Sequence[Command]
) -> int:
    """Queue ``commands`` to every live node holding the user; how many nodes that was."""
    nodes = (await directory.nodes_for([(app_id, user_id)])).get((app_id, user_id), set())
    if nodes:
        body = encode(list(commands))
        await bus.publish_to_nodes(dict.fromkeys(sorted(nodes), body))
    return len(nodes)
