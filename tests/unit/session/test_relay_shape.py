"""The shape relay needs: an end-to-end session A<->C carried inside A<->B and B<->C.

Not the relay layer (that is routing's), only proof that the session API lets
one be built: opaque virtual addresses, messages that come out addressed to
them, and `receive_datagram` saying which peer an inner message authenticated as.
"""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.session.events import ControlReceived, PacketReceived
from gossipmesh.session.manager import SessionManager
from gossipmesh.wire import PayloadKind
from tests.unit.session.pair import IPV4_PACKET, make_manager, peer_of


def envelope(destination: bytes, message: bytes) -> bytes:
    # Control payloads arrive padded, so the envelope carries its own length.
    return bytes([PayloadKind.RELAY]) + destination + len(message).to_bytes(2, "big") + message


def open_envelope(payload: bytes) -> tuple[bytes, bytes]:
    destination, length = payload[1:33], int.from_bytes(payload[33:35], "big")
    return destination, payload[35 : 35 + length]


def test_end_to_end_session_through_a_relay() -> None:
    a, b, c = make_manager(1), make_manager(2), make_manager(3)
    a.add_peer(b.static_public, 0.0, endpoint="B")
    b.add_peer(a.static_public, 0.0, endpoint="A")
    b.add_peer(c.static_public, 0.0, endpoint="C")
    c.add_peer(b.static_public, 0.0, endpoint="B")
    via_b: Hashable = ("via", b.static_public)
    a.add_peer(c.static_public, 0.0, endpoint=via_b)
    c.add_peer(a.static_public, 0.0)  # learns its endpoint from the first message
    nodes = {"A": a, "B": b, "C": c}
    names = {a.static_public: "A", b.static_public: "B", c.static_public: "C"}
    delivered: list[tuple[str, object]] = []

    def step(now: float) -> int:
        moved = 0
        for name, node in nodes.items():
            for data, addr in node.datagrams_to_send(now):
                moved += 1
                if isinstance(addr, tuple) and addr[0] == "via":
                    # Wrap an end-to-end message for the hop's session.
                    final = next(k for k, p in node.peers.items() if p.endpoint == addr)
                    node.send(addr[1], envelope(final, data), now)
                else:
                    nodes[str(addr)].receive_datagram(data, name, now)
            while (event := node.next_event()) is not None:
                moved += 1
                if isinstance(event, ControlReceived) and event.payload[0] == PayloadKind.RELAY:
                    destination, inner = open_envelope(event.payload)
                    if destination == node.static_public:
                        authenticated = node.receive_datagram(inner, ("via", event.peer), now)
                        delivered.append((name, names.get(authenticated or b"")))
                    else:
                        node.send(destination, envelope(destination, inner), now)
                elif isinstance(event, PacketReceived):
                    delivered.append((name, event))
        return moved

    a.send(c.static_public, IPV4_PACKET, 0.0)
    for _ in range(50):
        if not step(0.0):
            break
    assert ("C", PacketReceived(a.static_public, IPV4_PACKET)) in delivered
    assert ("C", "A") in delivered  # inner messages authenticated as A, not B
    assert peer_of(c, a).endpoint == ("via", b.static_public)
    # B carried envelopes only: the inner packet never surfaced there.
    assert not [who for who, event in delivered if who == "B"]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 2**32), st.binary(max_size=64))
def test_any_two_nodes_handshake_and_round_trip(seed_a: int, seed_b: int, psk: bytes) -> None:
    psk = (psk + bytes(32))[:32]
    a, b = make_manager(seed_a), make_manager(seed_b + 2**33)
    a.add_peer(b.static_public, 0.0, endpoint="B", preshared_key=psk)
    b.add_peer(a.static_public, 0.0, endpoint="A", preshared_key=psk)
    managers: dict[str, SessionManager] = {"A": a, "B": b}
    a.send(b.static_public, IPV4_PACKET, 0.0)
    for _ in range(10):
        batch = [
            (name, data, addr)
            for name, manager in managers.items()
            for data, addr in manager.datagrams_to_send(0.0)
        ]
        if not batch:
            break
        for name, data, addr in batch:
            managers[str(addr)].receive_datagram(data, name, 0.0)
    events = []
    while (event := b.next_event()) is not None:
        events.append(event)
    assert PacketReceived(a.static_public, IPV4_PACKET) in events
