"""The subscriber's timing decisions and token sources, as plain functions of numbers."""

from __future__ import annotations

import pytest

from herald_client.policy import backoff_delay, refresh_retry_delay, resolve_token


def test_backoff_doubles_from_the_low_bound_up_to_the_high_one() -> None:
    ceilings = [backoff_delay(attempt, 0.05, 2.0, jitter=0.999999) for attempt in range(8)]

    assert ceilings[:3] == pytest.approx([0.05, 0.1, 0.2], rel=1e-5)
    assert ceilings[-1] == pytest.approx(2.0, rel=1e-5)


def test_backoff_jitter_spreads_a_wait_between_half_and_all_of_its_ceiling() -> None:
    assert backoff_delay(3, 0.05, 2.0, jitter=0.0) == pytest.approx(0.2)
    assert backoff_delay(3, 0.05, 2.0, jitter=0.5) == pytest.approx(0.3)


def test_a_refused_refresh_is_retried_sooner_than_half_the_time_left_and_within_eight_seconds() -> None:
    assert refresh_retry_delay(0, 30.0) == 0.5
    assert refresh_retry_delay(3, 30.0) == 4.0
    assert refresh_retry_delay(6, 30.0) == 8.0
    assert refresh_retry_delay(4, 6.0) == 3.0


def test_no_retry_is_planned_when_it_could_not_land_before_exp() -> None:
    assert refresh_retry_delay(0, 0.9) is None
    assert refresh_retry_delay(0, -1.0) is None


async def test_a_token_may_be_a_string_or_a_plain_or_async_function() -> None:
    async def later() -> str:
        return "ht_async"

    assert await resolve_token("ht_fixed") == "ht_fixed"
    assert await resolve_token(lambda: "ht_sync") == "ht_sync"
    assert await resolve_token(later) == "ht_async"


async def test_a_token_function_returning_no_string_is_an_error() -> None:
    with pytest.raises(TypeError, match="NoneType"):
        await resolve_token(lambda: None)  # type: ignore[arg-type, return-value]
