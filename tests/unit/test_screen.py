"""The push node's token screen (services/push/screen.py): malformed tokens and recent
refusals are answered without asking auth."""

from __future__ import annotations

import json

import httpx

from herald.core.credentials import is_connect_token, new_connect_token
from herald.services.push.introspect import TokenChecker
from herald.services.push.screen import SUSPECT_AFTER, RefusalMemory, SuspectAddresses, TokenScreen

GOOD = new_connect_token()


def test_tokens_auth_issues_have_the_checked_shape() -> None:
    assert all(is_connect_token(new_connect_token()) for _ in range(200))
    for made_up in ("", "ht_", "ht_short", "hk_" + GOOD[3:], GOOD + "x", GOOD[:-1] + "!", " " + GOOD):
        assert not is_connect_token(made_up)


class CountingAuth:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        tokens = json.loads(request.content)["tokens"]
        self.asked += tokens
        results = [
            {"active": True, "app_id": "app-1", "user_id": "u", "exp": 2e9} if token == GOOD else {"active": False}
            for token in tokens
        ]
        return httpx.Response(200, json={"results": results})


def _screen(auth: CountingAuth, clock: list[float]) -> TokenScreen:
    checker = TokenChecker("http://auth", "service-secret", transport=httpx.MockTransport(auth))
    return TokenScreen(checker, clock=lambda: clock[0])


async def test_a_malformed_token_is_refused_without_asking_auth() -> None:
    auth = CountingAuth()
    screen = _screen(auth, [0.0])
    assert await screen.identity("ht_not-a-real-token") is None
    assert auth.asked == []


async def test_a_refused_token_is_remembered_until_its_time_runs_out() -> None:
    auth, clock = CountingAuth(), [0.0]
    screen = _screen(auth, clock)
    made_up = new_connect_token()
    assert await screen.identity(made_up) is None
    assert await screen.identity(made_up) is None
    assert auth.asked == [made_up]
    clock[0] = 3600.0
    assert await screen.identity(made_up) is None
    assert auth.asked == [made_up, made_up]


async def test_a_valid_token_is_asked_every_time() -> None:
    auth = CountingAuth()
    screen = _screen(auth, [0.0])
    assert (await screen.identity(GOOD)) is not None
    assert (await screen.identity(GOOD)) is not None
    assert auth.asked == [GOOD, GOOD]


def test_the_refusal_memory_forgets_the_least_recently_seen_past_its_bound() -> None:
    memory = RefusalMemory(most=2, kept_s=60)
    memory.remember("a", 0.0)
    memory.remember("b", 0.0)
    assert memory.refused("a", 1.0)
    memory.remember("c", 1.0)
    assert len(memory) == 2
    assert memory.refused("a", 2.0) and memory.refused("c", 2.0)
    assert not memory.refused("b", 2.0)


def test_an_address_sending_mostly_refused_tokens_becomes_suspect_for_a_window() -> None:
    addresses = SuspectAddresses(window_s=30)
    for _ in range(SUSPECT_AFTER):
        addresses.note("198.51.100.7", admitted=False, now=0.0)
    assert not addresses.suspect("198.51.100.7", 1.0)
    addresses.note("198.51.100.7", admitted=False, now=1.0)
    assert addresses.suspect("198.51.100.7", 1.0)
    assert not addresses.suspect("198.51.100.7", 31.0)  # a new window
    assert not addresses.suspect("192.0.2.1", 1.0)


def test_an_address_admitting_more_than_it_refuses_is_not_suspect() -> None:
    """Many users behind one NAT, one of them mistyping: the address stays in the fast lane."""
    addresses = SuspectAddresses(window_s=30)
    for _ in range(SUSPECT_AFTER + 5):
        addresses.note("203.0.113.9", admitted=False, now=0.0)
    for _ in range(SUSPECT_AFTER + 10):
        addresses.note("203.0.113.9", admitted=True, now=0.0)
    assert not addresses.suspect("203.0.113.9", 1.0)


async def test_tokens_from_a_suspect_address_are_asked_in_the_low_priority_lane() -> None:
    asked: list[bool] = []

    class Recording(TokenChecker):
        async def identity(self, token: str, low_priority: bool = False) -> None:
            asked.append(low_priority)
            return None

    screen = TokenScreen(Recording("http://auth", "s"), clock=lambda: 0.0)
    for _ in range(SUSPECT_AFTER + 2):
        await screen.identity(new_connect_token(), "198.51.100.7")
    await screen.identity(new_connect_token(), "192.0.2.1")
    assert asked[0] is False and asked[-2] is True and asked[-1] is False
