"""collect's operations on users without HTTP: group membership, who is online, presence, kick.

Membership lives in the store (it must survive anything); joins and leaves are also sent
to the push nodes holding the user's connections, which follow at once and keep the
per-node reader counts in the directory that group messages are routed by. The routes
(``services/collect/people.py``) only move values between HTTP and these methods.
"""

from __future__ import annotations

import time

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.commands import Join, Kick, Leave
from herald.core.errors import Conflict
from herald.core.model import check_group, check_user_id, group_channel
from herald.messaging import events
from herald.messaging.to_nodes import send_to_user_nodes
from herald.services.collect.people_models import (
    ConnectionInfo,
    Kicked,
    Member,
    Members,
    Membership,
    Online,
    OnlineUser,
    Presence,
)
from herald.services.collect.quotas import Quotas

MAX_PAGE = 1000
# An online list by group reads the members from the store in pages; past this many
# members it says so (``truncated``) rather than taking unbounded time.
MAX_GROUP_SCAN = 100_000


class PeopleService:
    def __init__(self, store: Store, directory: Directory, bus: Bus, quotas: Quotas) -> None:
        self._store = store
        self._directory = directory
        self._bus = bus
        self._quotas = quotas

    async def join(self, app_id: str, group: str, user_id: str) -> Membership:
        """Make the user a member (409 past the app's groups-per-user limit) and have their
        live connections read the group from the offset they joined at."""
        check_group(group)
        check_user_id(user_id)
        groups = await self._store.groups_of(app_id, user_id)
        joined_after = groups.get(group)
        added = False
        if joined_after is None:
            joined_after, added = await self._add_member(app_id, group, user_id, len(groups))
        # Sent even when already a member: a retry after a failed send must still reach the nodes.
        join = Join(app_id, user_id, group_channel(group), joined_after)
        await send_to_user_nodes(self._directory, self._bus, app_id, user_id, [join])
        if added:
            await events.publish(self._bus, events.event(events.GROUP_JOINED, app_id, user_id=user_id, group=group))
        return Membership(group=group, user_id=user_id, joined=added, joined_after=joined_after)

    async def leave(self, app_id: str, group: str, user_id: str) -> None:
        """End the membership, if any; the user's connections stop reading the group."""
        check_group(group)
        check_user_id(user_id)
        removed = await self._store.remove_member(app_id, group, user_id)
        leave = Leave(app_id, user_id, group_channel(group))
        await send_to_user_nodes(self._directory, self._bus, app_id, user_id, [leave])
        if removed:
            await events.publish(self._bus, events.event(events.GROUP_LEFT, app_id, user_id=user_id, group=group))

    async def members(self, app_id: str, group: str, after: str, limit: int) -> Members:
        """One page of the group's members after ``after``, each with online yes/no."""
        check_group(group)
        page = await self._store.list_members(app_id, group, after, limit)
        online = await self._directory.online(app_id, page, len(page)) if page else {}
        return Members(
            group=group,
            members=[Member(user_id=u, online=u in online, connections=online.get(u, 0)) for u in page],
            next=page[-1] if len(page) == limit else None,
        )

    async def online(self, app_id: str, group: str | None, limit: int) -> Online:
        """Online users (app-wide, or the group's members) by user id, at most ``limit``."""
        truncated = False
        if group is None:
            counts = await self._directory.online(app_id, None, limit + 1)
        else:
            counts, truncated = await self._online_members(app_id, group)
        users = sorted(counts)
        if len(users) > limit:
            users, truncated = users[:limit], True
        return Online(
            group=group,
            users=[OnlineUser(user_id=u, connections=counts[u]) for u in users],
            total_users=len(users),
            total_connections=sum(counts[u] for u in users),
            truncated=truncated,
        )

    async def presence(self, app_id: str, user_id: str) -> Presence:
        check_user_id(user_id)
        located = await self._directory.connections_of(app_id, user_id)
        return Presence(
            user_id=user_id,
            online=bool(located),
            connections=[
                ConnectionInfo(conn_id=c.conn_id, node=c.node_id, device=c.device, since=c.since) for c in located
            ],
        )

    async def kick(self, app_id: str, user_id: str) -> Kicked:
        """Close every connection of the user (their tokens stay valid)."""
        check_user_id(user_id)
        kick = Kick(app_id, user_id, None, "kicked")
        nodes = await send_to_user_nodes(self._directory, self._bus, app_id, user_id, [kick])
        return Kicked(user_id=user_id, nodes=nodes)

    async def _add_member(self, app_id: str, group: str, user_id: str, in_groups: int) -> tuple[int, bool]:
        """``(joined_after, added)`` for a user who was in ``in_groups`` groups, not this one."""
        most = await self._quotas.max_groups_per_user(app_id)
        if in_groups >= most:
            raise Conflict(f"this user is in {in_groups} groups; at most {most}", code="too_many_groups")
        channel = group_channel(group)
        joined_after = (await self._store.channel_heads(app_id, [channel]))[channel]
        added = await self._store.add_member(app_id, group, user_id, joined_after, time.time())
        if not added:  # a concurrent join won: follow its record
            joined_after = (await self._store.groups_of(app_id, user_id)).get(group, joined_after)
        return joined_after, added

    async def _online_members(self, app_id: str, group: str) -> tuple[dict[str, int], bool]:
        """The group's online members with their connection counts, reading members a page
        at a time; True with them if the scan stopped at ``MAX_GROUP_SCAN``."""
        check_group(group)
        counts: dict[str, int] = {}
        after, scanned = "", 0
        while scanned < MAX_GROUP_SCAN:
            page = await self._store.list_members(app_id, group, after, MAX_PAGE)
            if not page:
                return counts, False
            scanned += len(page)
            counts.update(await self._directory.online(app_id, page, len(page)))
            after = page[-1]
            if len(page) < MAX_PAGE:
                return counts, False
        return counts, True
