"""The delivery guarantees against `herald dev` (standalone): tests/support/guarantees.py."""

from __future__ import annotations

import pytest

from herald_client import Publisher
from tests.support import guarantees
from tests.support.guarantees import Target
from tests.support.procs import Standalone


@pytest.fixture
def target(standalone: Standalone, publisher: Publisher) -> Target:
    return Target(publisher, [standalone.ws_url])


async def test_a_late_member_does_not_read_the_groups_past(target: Target) -> None:
    await guarantees.a_late_member_does_not_read_the_groups_past(target)


async def test_a_rejoin_skips_what_was_sent_while_the_user_was_out(target: Target) -> None:
    await guarantees.a_rejoin_skips_what_was_sent_while_out(target)


async def test_a_connection_does_not_outlive_its_token(target: Target) -> None:
    await guarantees.a_connection_does_not_outlive_its_token(target)


async def test_an_acked_message_does_not_come_back_after_a_clean_close(target: Target) -> None:
    await guarantees.an_acked_message_does_not_come_back_after_a_clean_close(target)


async def test_an_ack_beyond_what_was_sent_is_clamped(target: Target) -> None:
    await guarantees.an_ack_beyond_what_was_sent_is_clamped(target)


async def test_a_revoke_closes_handshakes_in_flight(target: Target) -> None:
    await guarantees.a_revoke_closes_handshakes_in_flight(target)
