"""Which refused bulk writes the MongoDB store takes as "the first one stands"
(``duplicates_only``): duplicate keys alone, never a write concern error or another code."""

from __future__ import annotations

import pytest
from pymongo.errors import BulkWriteError

from herald.adapters.store.mongo.connection import DUPLICATE_KEY, duplicates_only


def refused(details: dict[str, object]) -> BulkWriteError:
    return BulkWriteError(details)  # type: ignore[arg-type]


def test_duplicate_keys_alone_are_handed_back() -> None:
    errors = [{"index": 0, "code": DUPLICATE_KEY}, {"index": 3, "code": DUPLICATE_KEY}]

    assert duplicates_only(refused({"writeErrors": errors})) == errors


def test_another_write_error_beside_them_raises_the_refusal() -> None:
    exc = refused({"writeErrors": [{"index": 0, "code": DUPLICATE_KEY}, {"index": 1, "code": 121}]})

    with pytest.raises(BulkWriteError) as raised:
        duplicates_only(exc)
    assert raised.value is exc


def test_a_write_concern_error_without_write_errors_raises() -> None:
    with pytest.raises(BulkWriteError):
        duplicates_only(refused({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}))
