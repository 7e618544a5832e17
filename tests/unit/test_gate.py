"""The push node's admission gate (services/push/gate.py): deadlines from accept, caps per
node and per source address, the connection cap. Pure bookkeeping, no sockets."""

from __future__ import annotations

from herald.services.push.gate import GateLimits, HandshakeGate


def _gate(**limits: float) -> HandshakeGate[str]:
    return HandshakeGate(GateLimits(**limits))  # type: ignore[arg-type]


def test_a_handshake_expires_at_the_deadline_counted_from_accept() -> None:
    gate = _gate(handshake_timeout_s=10)
    gate.admit("slow", "10.0.0.1", 0, now=100.0)
    gate.admit("late", "10.0.0.2", 1, now=105.0)
    assert gate.expired(109.9) == []
    assert gate.expired(110.0) == ["slow"]
    assert gate.expired(115.0) == ["slow", "late"]


def test_an_answered_handshake_no_longer_expires() -> None:
    gate = _gate(handshake_timeout_s=10)
    gate.admit("quick", "10.0.0.1", 0, now=100.0)
    gate.done("quick")
    assert gate.expired(200.0) == [] and len(gate) == 0


def test_past_the_node_cap_the_oldest_handshake_goes_not_the_newcomer() -> None:
    gate = _gate(max_handshakes=3)
    for index in range(3):
        gate.admit(f"slow-{index}", f"10.0.0.{index}", index, now=float(index))
    admission = gate.admit("user", "192.0.2.1", 3, now=10.0)
    assert admission.refused is None and not admission.wait
    assert admission.evicted == ["slow-0"]
    assert len(gate) == 3


def test_past_the_per_address_cap_a_socket_waits_and_gets_the_next_turn() -> None:
    gate = _gate(max_handshakes_per_address=2)
    assert not gate.admit("a", "10.0.0.1", 0, now=0.0).wait
    assert not gate.admit("b", "10.0.0.1", 1, now=0.0).wait
    assert gate.admit("c", "10.0.0.1", 2, now=0.0).wait
    assert not gate.admit("other", "10.0.0.2", 3, now=0.0).wait
    assert gate.reading("10.0.0.1") == 2
    assert gate.done("a") == "c"
    assert gate.reading("10.0.0.1") == 2
    assert gate.done("b") is None and gate.done("c") is None
    assert gate.reading("10.0.0.1") == 0


def test_a_waiting_socket_that_leaves_frees_nothing_it_did_not_hold() -> None:
    gate = _gate(max_handshakes_per_address=1)
    gate.admit("a", "10.0.0.1", 0, now=0.0)
    gate.admit("b", "10.0.0.1", 1, now=0.0)
    assert gate.done("b") is None
    assert gate.reading("10.0.0.1") == 1
    assert gate.done("a") is None and gate.reading("10.0.0.1") == 0


def test_evicting_a_reading_handshake_gives_its_turn_to_a_waiting_one() -> None:
    gate = _gate(max_handshakes=2, max_handshakes_per_address=1)
    gate.admit("a", "10.0.0.1", 0, now=0.0)
    gate.admit("b", "10.0.0.1", 1, now=1.0)
    admission = gate.admit("user", "192.0.2.1", 2, now=2.0)
    assert admission.evicted == ["a"] and admission.resumed == ["b"]


def test_past_the_connection_cap_a_newcomer_is_refused() -> None:
    gate = _gate(max_connections=5)
    admission = gate.admit("one-too-many", "10.0.0.1", 5, now=0.0)
    assert admission.refused == "node_full"
    assert len(gate) == 0
