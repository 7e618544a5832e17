import pytest

from herald.core.model import Delivery
from herald.core.receipts import AckReport, ReceiptBatch, decode, encode


def test_a_batch_round_trips() -> None:
    batch = ReceiptBatch(
        deliveries=[
            Delivery("m1", "a1", "user:7", 3, "c1", None, 12.5),
            Delivery("m1", "a1", "user:7", 3, "c2", "ph", 13),
        ],
        acks=[AckReport("a1", "7", "c1", {"user:7": 3}, 14.0)],
    )
    assert decode(encode(batch)) == batch


def test_an_empty_batch_is_falsy() -> None:
    assert not ReceiptBatch()


@pytest.mark.parametrize("body", [b"{}", b'{"deliveries": [[1]], "acks": []}', b"nope"])
def test_a_malformed_body_is_refused(body: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode(body)
