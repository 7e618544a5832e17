from herald.services.dispatch.routing import in_channel_order, plan_routes, recipients_of, shared_channels_of


def _msg(app: str, channel: str, offset: int) -> dict:
    return {"id": f"{channel}-{offset}", "app": app, "channel": channel, "offset": offset}


def test_recipients_are_listed_once_each() -> None:
    messages = [_msg("a1", "user:7", 1), _msg("a1", "user:7", 2), _msg("a1", "user:8", 1)]
    assert recipients_of(messages) == [("a1", "7"), ("a1", "8")]


def test_the_same_user_id_in_two_apps_is_two_recipients() -> None:
    assert recipients_of([_msg("a1", "user:7", 1), _msg("a2", "user:7", 1)]) == [("a1", "7"), ("a2", "7")]


def test_each_node_gets_only_the_messages_of_its_users_in_order() -> None:
    messages = [_msg("a1", "user:7", 1), _msg("a1", "user:8", 1), _msg("a1", "user:7", 2)]
    routes = plan_routes(messages, {("a1", "7"): {"n1"}, ("a1", "8"): {"n2"}})
    assert [m["id"] for m in routes["n1"]] == ["user:7-1", "user:7-2"]
    assert [m["id"] for m in routes["n2"]] == ["user:8-1"]


def test_a_user_on_two_nodes_gets_the_message_on_both_once() -> None:
    routes = plan_routes([_msg("a1", "user:7", 1)], {("a1", "7"): {"n1", "n2"}})
    assert {node: len(msgs) for node, msgs in routes.items()} == {"n1": 1, "n2": 1}


def test_an_offline_user_is_routed_nowhere() -> None:
    assert plan_routes([_msg("a1", "user:7", 1)], {}) == {}


def test_routes_never_cross_apps() -> None:
    routes = plan_routes([_msg("a2", "user:7", 1)], {("a1", "7"): {"n1"}})
    assert routes == {}


def test_group_and_broadcast_channels_are_looked_up_once_each_per_app() -> None:
    messages = [_msg("a1", "group:ops", 1), _msg("a1", "group:ops", 2), _msg("a2", "group:ops", 1)]
    messages.append(_msg("a1", "broadcast", 1))
    assert shared_channels_of(messages) == [("a1", "group:ops"), ("a2", "group:ops"), ("a1", "broadcast")]


def test_user_channels_are_not_shared_channels() -> None:
    assert shared_channels_of([_msg("a1", "user:7", 1)]) == []


def test_a_group_message_goes_once_to_each_node_with_readers() -> None:
    routes = plan_routes([_msg("a1", "group:ops", 1)], {}, {("a1", "group:ops"): {"n1", "n2"}})
    assert {node: [m["id"] for m in msgs] for node, msgs in routes.items()} == {
        "n1": ["group:ops-1"],
        "n2": ["group:ops-1"],
    }


def test_a_group_without_readers_is_routed_nowhere() -> None:
    assert plan_routes([_msg("a1", "group:ops", 1)], {}, {}) == {}


def test_a_group_route_never_crosses_apps() -> None:
    assert plan_routes([_msg("a2", "group:ops", 1)], {}, {("a1", "group:ops"): {"n1"}}) == {}


def test_user_and_group_messages_keep_their_order_on_a_node() -> None:
    messages = [_msg("a1", "user:7", 1), _msg("a1", "group:ops", 1), _msg("a1", "user:7", 2)]
    routes = plan_routes(messages, {("a1", "7"): {"n1"}}, {("a1", "group:ops"): {"n1"}})
    assert [m["id"] for m in routes["n1"]] == ["user:7-1", "group:ops-1", "user:7-2"]


def test_a_nodes_messages_are_put_in_offset_order_per_channel() -> None:
    messages = [_msg("a1", "user:7", 2), _msg("a1", "user:8", 5), _msg("a1", "user:7", 1), _msg("a1", "user:8", 4)]
    assert [m["id"] for m in in_channel_order(messages)] == ["user:7-1", "user:7-2", "user:8-4", "user:8-5"]


def test_the_same_channel_name_in_two_apps_is_ordered_apart() -> None:
    messages = [_msg("a1", "user:7", 2), _msg("a2", "user:7", 1), _msg("a1", "user:7", 1)]
    ordered = in_channel_order(messages)
    assert [(m["app"], m["offset"]) for m in ordered] == [("a1", 1), ("a1", 2), ("a2", 1)]
