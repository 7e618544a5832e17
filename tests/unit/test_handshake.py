from herald.services.push.handshake import choose_subprotocol, offered_subprotocols, token_from_request


def test_token_from_the_authorization_header() -> None:
    assert token_from_request("/ws", "Bearer ht_abc", []) == "ht_abc"


def test_token_from_a_subprotocol_as_browsers_send_it() -> None:
    offered = offered_subprotocols("herald, ht_xyz")
    assert token_from_request("/ws", None, offered) == "ht_xyz"
    assert choose_subprotocol(offered) == "herald"


def test_token_from_the_query_string() -> None:
    assert token_from_request("/ws?device=phone&token=ht_q", None, []) == "ht_q"


def test_no_token_anywhere() -> None:
    assert token_from_request("/ws", "Basic dXNlcg==", ["herald"]) is None


def test_a_lone_token_subprotocol_is_echoed_so_browsers_accept_the_answer() -> None:
    assert choose_subprotocol(["ht_only"]) == "ht_only"
