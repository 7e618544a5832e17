"""collect's endpoints about users, declared at module level: group membership, who is
online, presence, kick. Each turns HTTP into one ``PeopleService`` call."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from herald.core.model import GROUP_RE, USER_ID_RE
from herald.messaging.apikeys import AppId
from herald.services.collect.people_models import Kicked, Members, Membership, Online, Presence
from herald.services.collect.people_service import MAX_PAGE, PeopleService
from herald.web.api import ERROR_RESPONSES

# The patterns are declared in the schema and checked by the service (400 invalid_group / invalid_user_id).
GroupName = Annotated[
    str, Path(min_length=1, max_length=128, examples=["ops"], json_schema_extra={"pattern": GROUP_RE.pattern})
]
UserId = Annotated[
    str, Path(min_length=1, max_length=128, examples=["7"], json_schema_extra={"pattern": USER_ID_RE.pattern})
]


async def people_service(request: Request) -> PeopleService:
    """The app's ``PeopleService``, kept in ``app.state.people`` by ``create_app``.
    (async: FastAPI would run a plain function on a worker thread, per request)."""
    service: PeopleService = request.app.state.people
    return service


People = Annotated[PeopleService, Depends(people_service)]

people_routes = APIRouter()


@people_routes.put(
    "/v1/groups/{group}/members/{user_id}",
    response_model=Membership,
    responses=ERROR_RESPONSES,
    tags=["groups"],
    summary="Add a user to a group; their live connections start reading it at once",
)
async def join(group: GroupName, user_id: UserId, app_id: AppId, people: People) -> Membership:
    return await people.join(app_id, group, user_id)


@people_routes.delete(
    "/v1/groups/{group}/members/{user_id}",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    tags=["groups"],
    summary="Remove a user from a group (204 whether or not they were a member)",
)
async def leave(group: GroupName, user_id: UserId, app_id: AppId, people: People) -> Response:
    await people.leave(app_id, group, user_id)
    return Response(status_code=204)


@people_routes.get(
    "/v1/groups/{group}/members",
    response_model=Members,
    responses=ERROR_RESPONSES,
    tags=["groups"],
    summary="A group's members, each with online yes/no",
)
async def members(
    group: GroupName,
    app_id: AppId,
    people: People,
    after: Annotated[str, Query(max_length=128, description="user id to page after")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Members:
    return await people.members(app_id, group, after, limit)


@people_routes.get(
    "/v1/online",
    response_model=Online,
    responses=ERROR_RESPONSES,
    tags=["presence"],
    summary="Online users with their connection counts, app-wide or in one group",
)
async def online(
    app_id: AppId,
    people: People,
    group: Annotated[
        str | None, Query(min_length=1, max_length=128, json_schema_extra={"pattern": GROUP_RE.pattern})
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Online:
    return await people.online(app_id, group, limit)


@people_routes.get(
    "/v1/users/{user_id}/presence",
    response_model=Presence,
    responses=ERROR_RESPONSES,
    tags=["presence"],
    summary="The user's live connections: id, node, device, since",
)
async def presence(user_id: UserId, app_id: AppId, people: People) -> Presence:
    return await people.presence(app_id, user_id)


@people_routes.post(
    "/v1/users/{user_id}/kick",
    response_model=Kicked,
    responses=ERROR_RESPONSES,
    tags=["presence"],
    summary="Close every connection of the user with 4003 (their tokens stay valid)",
)
async def kick(user_id: UserId, app_id: AppId, people: People) -> Kicked:
    return await people.kick(app_id, user_id)
