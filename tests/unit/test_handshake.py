from urllib.parse import parse_qs, urlsplit

from hypothesis import example, given
from hypothesis import strategies as st

from herald.services.push.handshake import (
    choose_subprotocol,
    device_from_request,
    offered_subprotocols,
    query_value,
    request_path,
    token_from_request,
)


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


def test_a_blank_or_missing_query_value_is_no_value() -> None:
    assert token_from_request("/ws?token=&token=ht_second", None, []) == "ht_second"
    assert token_from_request("/ws?token", None, []) is None
    assert device_from_request("/ws?device=") is None


def test_an_escaped_query_value_is_decoded() -> None:
    assert token_from_request("/ws?token=ht_a%2Bb", None, []) == "ht_a+b"
    assert device_from_request("/ws?device=my+phone") == "my phone"


def test_the_device_name_is_cut_to_64_characters() -> None:
    assert device_from_request("/ws?device=" + "d" * 100) == "d" * 64


def test_a_token_after_the_fragment_is_not_in_the_query() -> None:
    assert token_from_request("/ws#frag?token=ht_x", None, []) is None
    assert request_path("/ws#frag?token=ht_x") == "/ws"


def test_an_absolute_form_target_reads_as_its_path() -> None:
    assert request_path("http://push.example/ws?token=ht_x") == "/ws"
    assert query_value("http://push.example/ws?token=ht_x", "token") == "ht_x"


# Request targets as a client could send them: the characters of a path and a query,
# escapes and separators included (no tab or line break: the request line has none).
_TARGET_CHARS = st.sampled_from([*"/?#&=%+;:@.-_~!$'()*,ab0Z", "%2B", "%41", "%zz", "é", "token", "device"])
_TARGETS = st.lists(_TARGET_CHARS, max_size=24).map("".join)


@given(_TARGETS)
@example("/ws#a?token=b")
def test_the_path_is_what_urlsplit_reads(target: str) -> None:
    assert request_path(target) == urlsplit(target).path


@given(_TARGETS, st.sampled_from(["token", "device", "a"]))
@example("/ws#a?token=b", "token")
@example("/ws?token=a#b&token=c", "token")
def test_a_query_value_is_what_parse_qs_reads(target: str, name: str) -> None:
    values = parse_qs(urlsplit(target).query).get(name)
    assert query_value(target, name) == (values[0] if values else None)
