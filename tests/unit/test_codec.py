import pytest

from herald.core import codec
from herald.core.errors import BadRequest


def test_a_batch_round_trips() -> None:
    messages = [{"id": "x", "data": {"ünï": [1, 2.5, None]}}]
    assert codec.decode_batch(codec.encode_batch(messages)) == messages


def test_batches_are_split_to_fit_the_byte_bound() -> None:
    messages = [{"id": str(i), "data": "x" * 100} for i in range(50)]
    bodies = codec.encode_batches(messages, max_bytes=1000)
    assert all(len(body) <= 1000 for body in bodies)
    assert [m for body in bodies for m in codec.decode_batch(body)] == messages


def test_a_message_larger_than_the_bound_travels_alone() -> None:
    bodies = codec.encode_batches([{"a": "x" * 50}, {"b": "y" * 5000}, {"c": 1}], max_bytes=100)
    assert [len(codec.decode_batch(b)) for b in bodies] == [1, 1, 1]


def test_a_body_without_messages_is_refused() -> None:
    with pytest.raises(ValueError):
        codec.decode_batch(b'{"other": []}')


def test_size_of_unserialisable_data_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        codec.encoded_size({1: object()})
