"""What collect's people endpoints answer: memberships, members, who is online, presence, kicks."""

from pydantic import BaseModel, Field


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
