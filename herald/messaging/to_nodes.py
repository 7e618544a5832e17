"""Send control commands (join, leave, kick) to push nodes.

Used by collect (groups, kick) and auth (revocation). Joins, leaves and kicks go to the
nodes the directory says hold the user; each gets the commands in its own queue,
confirmed by the broker before the caller answers, so "204" means every node holding the
user has the command queued. A revocation goes to every live node: a handshake whose
token check passed just before the revoke is not in the directory yet, and the node
holding it must hear of the revoke to refuse it (``DeliveryCore.add``).
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


async def send_to_all_nodes(directory: Directory, bus: Bus, commands: Sequence[Command]) -> int:
    """Queue ``commands`` to every live node; how many nodes that was."""
    nodes = await directory.live_nodes()
    if nodes:
        body = encode(list(commands))
        await bus.publish_to_nodes(dict.fromkeys(nodes, body))
    return len(nodes)
