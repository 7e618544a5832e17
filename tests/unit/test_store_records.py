"""The one mapping between stored rows and the model, shared by the SQLite and MongoDB stores."""

from herald.adapters.store.records import MESSAGE_FIELDS, message_from, message_record, token_from
from herald.core.model import Message


def _message(**changes: object) -> Message:
    fields: dict[str, object] = {
        "id": "m1",
        "app_id": "app_1",
        "channel": "user:ann",
        "offset": 7,
        "event": "order.shipped",
        "data": {"order": 42, "note": "ünïcode", "nested": [1, {"$key": None}]},
        "ts": 1_700_000_000_000,
        "expires_at": 1_700_003_600.0,
        "status": "delivered",
        "idempotency_key": "k1",
        "published": "yes",
        "sender": {"user_id": "ann", "conn_id": "c1"},
    }
    fields.update(changes)
    return Message(**fields)  # type: ignore[arg-type]


def test_a_message_reads_back_from_its_record_unchanged() -> None:
    message = _message()
    assert message_from(message_record(message)) == message


def test_a_record_holds_every_field_with_data_as_json_text() -> None:
    record = message_record(_message())
    assert tuple(record) == MESSAGE_FIELDS
    assert isinstance(record["data"], str)


def test_a_message_without_a_sender_or_key_reads_back_none() -> None:
    message = _message(sender=None, idempotency_key=None)
    assert message_from(message_record(message)) == message


def test_a_record_from_before_senders_reads_back_without_one() -> None:
    record = message_record(_message())
    del record["sender"], record["idempotency_key"]
    restored = message_from(record)
    assert (restored.sender, restored.idempotency_key) == (None, None)


def test_a_token_record_from_before_labels_and_patterns_reads_back_without_them() -> None:
    record = {"token_hash": "h", "app_id": "app_1", "user_id": "ann", "expires_at": 2.0, "created_at": 1.0}
    token = token_from(record)
    assert (token.device, token.publish) == (None, ())
