"""The dead letters over HTTP, for the operator: list, replay and drop parked bus messages.

The same operations as ``herald dlq`` on a cluster (which talks to RabbitMQ itself), served
by dispatch so they also reach a ``herald dev`` process, whose dead letters live in its
own memory (``MemoryBus``). Operator token only (``HERALD_ADMIN_TOKEN``); a dispatch
started without one refuses every call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, Field

from herald.adapters.bus.base import Bus, DeadLetter
from herald.web.api import ERROR_RESPONSES, INTEGRAL, STRICT_BODY, secret_dependency

MOST = 10_000


class DeadLetterOut(BaseModel):
    id: str
    queue: str
    reason: str
    deliveries: int
    at_ms: int | None
    size: int
    about: str = Field(description="the Herald ids inside the message, or what an unreadable body looks like")

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        return cls(
            id=letter.id,
            queue=letter.queue,
            reason=letter.reason,
            deliveries=letter.deliveries,
            at_ms=letter.at_ms,
            size=len(letter.body),
            about=letter.about,
        )


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetterOut]


class Selection(BaseModel):
    model_config = STRICT_BODY
    ids: list[str] | None = Field(None, max_length=MOST, description="the dead letters to act on; none: all")
    limit: Annotated[int, Field(ge=1, le=MOST), INTEGRAL] = 1000


class Done(BaseModel):
    count: int


def install(api: FastAPI, bus: Bus, admin_token: str) -> None:
    operator = secret_dependency(admin_token, "operator (HERALD_ADMIN_TOKEN)", "OperatorToken")

    @api.get(
        "/v1/dead-letters",
        response_model=DeadLetters,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(operator)],
        tags=["dead letters"],
        summary="Parked bus messages, oldest first",
    )
    async def list_dead(limit: int = Query(100, ge=1, le=MOST)) -> DeadLetters:
        return DeadLetters(dead_letters=[DeadLetterOut.of(letter) for letter in await bus.dead_letters(limit)])

    @api.post(
        "/v1/dead-letters/replay",
        response_model=Done,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(operator)],
        tags=["dead letters"],
        summary="Send parked messages back to their queue",
    )
    async def replay(body: Selection) -> Done:
        return Done(count=await bus.replay_dead(body.ids, body.limit))

    @api.post(
        "/v1/dead-letters/drop",
        response_model=Done,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(operator)],
        tags=["dead letters"],
        summary="Delete parked messages for good",
    )
    async def drop(body: Selection) -> Done:
        return Done(count=await bus.drop_dead(body.ids, body.limit))
