"""Queue names by queue type: quorum queues cannot take over the names classic ones had."""

from herald.core.names import QUEUE_TYPES, Names


def test_classic_work_queues_keep_the_names_of_earlier_versions() -> None:
    classic = Names("herald").work_queues("classic")
    assert (classic.dispatch, classic.receipts) == ("herald.dispatch", "herald.receipts")


def test_no_queue_name_is_shared_between_the_two_types() -> None:
    names = [Names("herald").work_queues(kind) for kind in QUEUE_TYPES]
    each = [{q.dispatch, q.receipts, q.retries, q.dead, q.delay(500)} for q in names]
    assert not each[0] & each[1]


def test_a_source_queue_gives_back_its_label() -> None:
    quorum = Names("herald").work_queues("quorum")
    assert [quorum.label_of(name) for name in (quorum.dispatch, quorum.retries, "other")] == [
        "dispatch",
        "retries",
        None,
    ]
