"""What `herald dev` adds to its push node so the chat page works with no backend of yours.

A real app's backend mints connect tokens and manages groups with its API key; the demo
app has no backend, so in standalone mode only the push node answers
``/demo/session?user=&room=`` (a token allowed to publish to that room, the user made a
member), ``/demo/online?room=`` (who is in the room) and ``/demo/app`` (the demo app's id
and key, for the console page: `herald dev` prints them anyway, and they open nothing but
the demo app). Cluster push nodes never do.

Those answers are keys: ``/demo/app`` is the demo app's API key, ``/demo/session`` a token
for any user id. They are given to loopback clients only (``serves``), so a `herald dev`
listening on ``0.0.0.0`` (as in a container) hands nothing to its network, unless the
operator says otherwise with ``HERALD_DEMO_PUBLIC=1`` (``public``). Behind a proxy on the
same machine every client looks local: `herald dev` is not meant to sit behind one.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Response

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.commands import Join
from herald.core.credentials import new_connect_token, secret_hash
from herald.core.errors import BadRequest, HeraldError, Unavailable
from herald.core.model import TokenRecord, check_group, check_user_id, group_channel
from herald.messaging.to_nodes import send_to_user_nodes
from herald.services.push.http_answers import error_response, json_response

SESSION_TTL_S = 3600
HISTORY = 50  # messages of the room a chat page shows when it joins


def is_loopback(host: str | None) -> bool:
    """Whether a peer address is this machine's loopback (IPv4-mapped IPv6 included)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class DemoBackend:
    def __init__(
        self,
        store: Store,
        directory: Directory,
        bus: Bus,
        demo_app: Callable[[], Mapping[str, str]],
        *,
        public: bool = False,
    ) -> None:
        self._store = store
        self._directory = directory
        self._bus = bus
        self._demo_app = demo_app
        self.public = public

    def serves(self, address: str) -> bool:
        """Whether a client at ``address`` (its IP, "" if unknown) may have the demo's keys and tokens."""
        return self.public or is_loopback(address or None)

    def _app(self) -> str:
        return self.app()["app_id"]

    def app(self) -> dict[str, str]:
        """The demo app's id and API key, once `herald dev` has created it."""
        demo = self._demo_app()
        if not demo.get("app_id") or not demo.get("api_key"):
            raise Unavailable("the demo app is not ready yet")
        return {"app_id": demo["app_id"], "api_key": demo["api_key"]}

    async def session(self, user: str | None, room: str | None) -> dict[str, Any]:
        """A token for ``user`` that may publish to ``room``, with the user a member of it."""
        app_id = self._app()
        user_id, group = check_user_id(user), check_group(room)
        channel = group_channel(group)
        now = time.time()
        token = new_connect_token()
        await self._store.insert_token(
            TokenRecord(secret_hash(token), app_id, user_id, now + SESSION_TTL_S, now, "chat", (channel,))
        )
        head = (await self._store.channel_heads(app_id, [channel]))[channel]
        joined_after = (await self._store.groups_of(app_id, user_id)).get(group)
        if joined_after is None:
            await self._store.add_member(app_id, group, user_id, head, now)
            joined_after = head
        await send_to_user_nodes(
            self._directory, self._bus, app_id, user_id, [Join(app_id, user_id, channel, joined_after)]
        )
        # The room's recent history, as an app's backend serves it from the history API: a
        # connection of a new member starts at the join and never reads the group's past.
        recent = await self._store.read_channel(app_id, channel, max(0, head - HISTORY), HISTORY, now)
        history = [message.to_wire() for message in recent]
        return {"token": token, "user_id": user_id, "channel": channel, "head": head, "history": history}

    async def online(self, room: str | None) -> dict[str, Any]:
        app_id = self._app()
        group = check_group(room)
        members = await self._store.list_members(app_id, group, "", 1000)
        counts = await self._directory.online(app_id, members, len(members)) if members else {}
        return {"room": group, "users": [{"user_id": u, "connections": counts[u]} for u in sorted(counts)]}

    async def answer(self, path: str, target: str) -> Response:
        """The answer to a request for ``path`` under /demo/ (``target`` with its query)."""
        query = parse_qs(urlsplit(target).query)
        try:
            if path == "/demo/session":
                return json_response(200, await self.session(query_value(query, "user"), query_value(query, "room")))
            if path == "/demo/online":
                return json_response(200, await self.online(query_value(query, "room")))
            if path == "/demo/app":
                return json_response(200, self.app())
        except HeraldError as exc:
            return json_response(exc.status, exc.to_body())
        return error_response(404, "not_found", "the demo answers /demo/session, /demo/online and /demo/app")


def query_value(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        raise BadRequest(f"`{name}` is required", code="missing_parameter")
    return values[0]
