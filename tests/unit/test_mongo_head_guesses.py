"""Guessing offset counters' heads: only from values this process saw, and only while it pays."""

from __future__ import annotations

from herald.adapters.store.mongo.head_guesses import PROBE_EVERY, HeadGuesses


def test_a_counter_never_seen_means_the_heads_are_read_first() -> None:
    guesses = HeadGuesses()
    guesses.saw("a|user:ann", 4)

    assert guesses.guess(["a|user:ann", "a|user:bob"]) is None


def test_the_guesses_are_the_values_last_seen_in_the_order_asked() -> None:
    guesses = HeadGuesses()
    guesses.saw("a|user:ann", 4)
    guesses.saw("a|user:bob", 9)
    guesses.saw("a|user:ann", 6)

    assert guesses.guess(["a|user:bob", "a|user:ann"]) == [9, 6]


def test_a_forgotten_counter_is_read_again() -> None:
    guesses = HeadGuesses()
    guesses.saw("a|user:ann", 4)
    guesses.forget(["a|user:ann"])

    assert guesses.guess(["a|user:ann"]) is None


def test_guessing_stops_while_most_guessed_rounds_lose_a_counter() -> None:
    guesses = HeadGuesses()
    guesses.saw("a|user:ann", 4)
    for _ in range(20):
        guesses.settled(lost_any=True)

    answers = [guesses.guess(["a|user:ann"]) for _ in range(PROBE_EVERY * 3)]

    assert answers.count(None) == PROBE_EVERY * 3 - 3, "one round in PROBE_EVERY still guesses"


def test_guessing_resumes_once_the_probes_win_again() -> None:
    guesses = HeadGuesses()
    guesses.saw("a|user:ann", 4)
    for _ in range(20):
        guesses.settled(lost_any=True)
    for _ in range(30):
        guesses.settled(lost_any=False)

    assert guesses.guess(["a|user:ann"]) == [4]


def test_the_memory_of_counters_stays_bounded() -> None:
    guesses = HeadGuesses(max_known=100)
    for n in range(1000):
        guesses.saw(f"a|user:u{n}", n)

    assert guesses.guess(["a|user:u999"]) == [999]
    assert guesses.guess(["a|user:u0"]) is None
    assert len(guesses) <= 100
