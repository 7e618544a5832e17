import pytest

from herald.core import codec, commands
from herald.core.commands import Join, Kick, Leave


def test_commands_survive_the_trip_through_a_node_body() -> None:
    sent = [Join("a1", "7", "group:ops", 41), Leave("a1", "7", "group:ops"), Kick("a1", "7", "h", "revoked")]
    messages, decoded = commands.split_node_body(commands.encode(sent))
    assert messages == []
    assert decoded == sent


def test_a_kick_of_every_connection_has_no_token() -> None:
    _, decoded = commands.split_node_body(commands.encode([Kick("a1", "7", None, "kicked")]))
    assert decoded == [Kick("a1", "7", None, "kicked")]


def test_a_message_batch_is_a_node_body_without_commands() -> None:
    messages, decoded = commands.split_node_body(codec.encode_batch([{"id": "m1"}]))
    assert messages == [{"id": "m1"}]
    assert decoded == []


def test_an_unknown_command_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown control op"):
        commands.split_node_body(b'{"control":[{"op":"explode"}]}')


def test_a_malformed_command_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed"):
        commands.split_node_body(b'{"control":[{"op":"join","app":"a1"}]}')
