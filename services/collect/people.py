"""collect's routes about users: group membership, who is online, presence, kick.

Membership lives in the store (it must survive anything); joins and leaves are also sent
to the push nodes holding the user's connections, which follow at once and keep the
per-node reader counts in the directory that group messages are routed by.
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from herald.services.collect.quotas import Quotas
from pydantic import BaseModel, Field

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.commands import Join, Kick, Leave
from herald.core.errors import Conflict
from herald.core.model import GROUP_RE, USER_ID_RE, check_group, check_user_id, group_channel
from herald.messaging import events
from herald.messaging.to_nodes import send_to_user_nodes
from herald.web.api import ERROR_RESPONSES

MAX_PAGE = 1000
# An online list by group reads the members from the store in pages; past this many
# members it says so (``truncated``) rather than taking unbounded time.
MAX_GROUP_SCAN = 100_000

# The patterns are declared in the schema and checked by the handlers (400 invalid_group / invalid_user_id).
GroupName = Annotated[
    str, Path(min_length=1, max_length=128, examples=["ops"], json_schema_extra={"pattern": GROUP_RE.pattern})
]
UserId = Annotated[
    str, Path(min_length=1, max_length=128, examples=["7"], json_schema_extra={"pattern": USER_ID_RE.pattern})
]


class Membership(BaseModel):
    group: str
    user_id: str
    joined: bool = Field(description="false if the user already was a member")
    joined_after: int = Field(description="the group's last offset when they joined: they read what comes after")


class Member(BaseModel):
    user_id: str
    online: bool
    connections: int


class Members(BaseModel):
    group: str
    members: list[Member]
    next: str | None = Field(description="pass as `after` for the next page; null on the last one")


class OnlineUser(BaseModel):
    user_id: str
    connections: int


class Online(BaseModel):
    group: str | None
    users: list[OnlineUser]
    total_users: int
    total_connections: int
    truncated: bool = Field(description="true if the list stopped at `limit` (or the group scan bound)")


class ConnectionInfo(BaseModel):
    conn_id: str
    node: str
    device: str | None
    since: float


class Presence(BaseModel):
    user_id: str
    online: bool
    connections: list[ConnectionInfo]


class Kicked(BaseModel):
    user_id: str
    nodes: int = Field(description="push nodes that held connections of the user and were told to close them")


def people_routes(
    app_id_dependency: Any, store: Store, directory: Directory, bus: Bus, quotas: Quotas
) -> APIRouter:
    api = APIRouter()
    AppId = app_id_dependency

    @api.put(
        "/v1/groups/{group}/members/{user_id}",
        response_model=Membership,
        responses=ERROR_RESPONSES,
        tags=["groups"],
        summary="Add a user to a group; their live connections start reading it at once",
    )
    async def join(group: GroupName, user_id: UserId, app_id: AppId) -> Membership:
        check_group(group)
        check_user_id(user_id)
        channel = group_channel(group)
        groups = await store.groups_of(app_id, user_id)
        joined_after = groups.get(group)
        added = False
        if joined_after is None:
            most = await quotas.max_groups_per_user(app_id)
            if len(groups) >= most:
                raise Conflict(f"this user is in {len(groups)} groups; at most {most}", code="too_many_groups")
            joined_after = (await store.channel_heads(app_id, [channel]))[channel]
            added = await store.add_member(app_id, group, user_id, joined_after, time.time())
            if not added:  # a concurrent join won: follow its record
                joined_after = (await store.groups_of(app_id, user_id)).get(group, joined_after)
        # Sent even when already a member: a retry after a failed send must still reach the nodes.
        await send_to_user_nodes(directory, bus, app_id, user_id, [Join(app_id, user_id, channel, joined_after)])
        if added:
            await events.publish(bus, events.event(events.GROUP_JOINED, app_id, user_id=user_id, group=group))
        return Membership(group=group, user_id=user_id, joined=added, joined_after=joined_after)

    @api.delete(
        "/v1/groups/{group}/members/{user_id}",
        status_code=204,
        response_class=Response,
        responses=ERROR_RESPONSES,
        tags=["groups"],
        summary="Remove a user from a group (204 whether or not they were a member)",
    )
    async def leave(group: GroupName, user_id: UserId, app_id: AppId) -> Response:
        check_group(group)
        check_user_id(user_id)
        removed = await store.remove_member(app_id, group, user_id)
        await send_to_user_nodes(directory, bus, app_id, user_id, [Leave(app_id, user_id, group_channel(group))])
        if removed:
            await events.publish(bus, events.event(events.GROUP_LEFT, app_id, user_id=user_id, group=group))
        return Response(status_code=204)

    @api.get(
        "/v1/groups/{group}/members",
        response_model=Members,
        responses=ERROR_RESPONSES,
        tags=["groups"],
        summary="A group's members, each with online yes/no",
    )
    async def members(
        group: GroupName,
        app_id: AppId,
        after: Annotated[str, Query(max_length=128, description="user id to page after")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Members:
        check_group(group)
        page = await store.list_members(app_id, group, after, limit)
        online = await directory.online(app_id, page, len(page)) if page else {}
        return Members(
            group=group,
            members=[Member(user_id=u, online=u in online, connections=online.get(u, 0)) for u in page],
            next=page[-1] if len(page) == limit else None,
        )

    @api.get(
        "/v1/online",
        response_model=Online,
        responses=ERROR_RESPONSES,
        tags=["presence"],
        summary="Online users with their connection counts, app-wide or in one group",
    )
    async def online(
        app_id: AppId,
        group: Annotated[
            str | None, Query(min_length=1, max_length=128, json_schema_extra={"pattern": GROUP_RE.pattern})
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> Online:
        truncated = False
        if group is None:
            counts = await directory.online(app_id, None, limit + 1)
        else:
            check_group(group)
            counts = {}
            after, scanned = "", 0
            while scanned < MAX_GROUP_SCAN:
                page = await store.list_members(app_id, group, after, MAX_PAGE)
                if not page:
                    break
                scanned += len(page)
                counts.update(await directory.online(app_id, page, len(page)))
                after = page[-1]
                if len(page) < MAX_PAGE:
                    break
            else:
                truncated = True
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

    @api.get(
        "/v1/users/{user_id}/presence",
        response_model=Presence,
        responses=ERROR_RESPONSES,
        tags=["presence"],
        summary="The user's live connections: id, node, device, since",
    )
    async def presence(user_id: UserId, app_id: AppId) -> Presence:
        check_user_id(user_id)
        located = await directory.connections_of(app_id, user_id)
        return Presence(
            user_id=user_id,
            online=bool(located),
            connections=[
                ConnectionInfo(conn_id=c.conn_id, node=c.node_id, device=c.device, since=c.since) for c in located
            ],
        )

    @api.post(
        "/v1/users/{user_id}/kick",
        response_model=Kicked,
        responses=ERROR_RESPONSES,
        tags=["presence"],
        summary="Close every connection of the user with 4003 (their tokens stay valid)",
    )
    async def kick(user_id: UserId, app_id: AppId) -> Kicked:
        check_user_id(user_id)
        nodes = await send_to_user_nodes(directory, bus, app_id, user_id, [Kick(app_id, user_id, None, "kicked")])
        return Kicked(user_id=user_id, nodes=nodes)

    return api
