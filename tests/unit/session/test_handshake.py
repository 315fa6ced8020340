"""Handshakes and transport between two managers: sizes, events, payload kinds, roaming."""

from __future__ import annotations

import random

from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.session import messages
from gossipmesh.session.events import (
    ControlReceived,
    EndpointChanged,
    HandshakeCompleted,
    PacketReceived,
)
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.timers import Timers
from gossipmesh.wire import PayloadKind
from tests.unit.session.pair import (
    IPV4_PACKET,
    IPV6_PACKET,
    Switch,
    connected_pair,
    established_pair,
    peer_of,
)


def test_handshake_message_sizes_and_types() -> None:
    switch, a, b = connected_pair()
    a.send(b.static_public, IPV4_PACKET, 0.0)
    switch.pump(0.0)
    kinds = [(src, data[0], len(data)) for src, data, _ in switch.captured]
    assert kinds[0] == ("A", 1, messages.INITIATION_SIZE)
    assert kinds[1] == ("B", 2, messages.RESPONSE_SIZE)
    # The staged IP packet goes out in a transport message, padded to 16.
    assert kinds[2][:2] == ("A", 4)
    assert kinds[2][2] == 16 + 32 + 16
    for _, data, _ in switch.captured:
        assert data[1:4] == b"\x00\x00\x00"


def test_initiator_and_responder_events() -> None:
    switch, a, b = established_pair()
    (done_a,) = [e for e in switch.events["A"] if isinstance(e, HandshakeCompleted)]
    (done_b,) = [e for e in switch.events["B"] if isinstance(e, HandshakeCompleted)]
    assert done_a.initiator and not done_b.initiator
    assert done_a.peer == b.static_public and done_b.peer == a.static_public
    packets = [e for e in switch.events["B"] if isinstance(e, PacketReceived)]
    assert packets == [PacketReceived(a.static_public, IPV4_PACKET)]
    assert a.stats.handshakes_completed == b.stats.handshakes_completed == 1


def test_responder_can_initiate_too() -> None:
    switch, a, b = connected_pair()
    b.send(a.static_public, IPV6_PACKET, 0.0)
    switch.pump(0.0)
    assert [e for e in switch.events["A"] if isinstance(e, PacketReceived)] == [
        PacketReceived(b.static_public, IPV6_PACKET)
    ]
    a.send(b.static_public, IPV4_PACKET, 0.1)
    switch.pump(0.1)
    assert PacketReceived(a.static_public, IPV4_PACKET) in switch.events["B"]


def test_ip_padding_removed_control_payload_unpadded() -> None:
    switch, a, b = established_pair()
    control = bytes([PayloadKind.GOSSIP]) + b"hello"
    a.send(b.static_public, IPV6_PACKET, 1.0)
    a.send(b.static_public, control, 1.0)
    switch.pump(1.0)
    events = switch.events["B"]
    assert PacketReceived(a.static_public, IPV6_PACKET) in events
    (received,) = [e for e in events if isinstance(e, ControlReceived)]
    assert received.peer == a.static_public
    assert received.payload == control


def test_keepalive_produces_no_event_but_authenticates() -> None:
    _, a, b = established_pair()
    peer_a = peer_of(b, a)
    assert peer_a is not None and peer_a.current is not None
    datagram = a.encrypt_for(peer_of(a, b), b"", 2.0)
    assert datagram is not None and len(datagram) == messages.TRANSPORT_MINIMUM_SIZE
    assert b.receive_datagram(datagram, "A", 2.0) == a.static_public
    assert b.next_event() is None
    assert b.stats.keepalives_received >= 1


def test_receive_returns_authenticated_peer_for_opaque_address() -> None:
    """Relay: a datagram fed from a virtual address authenticates and moves the endpoint."""
    _, a, b = established_pair()
    datagram = a.encrypt_for(peer_of(a, b), IPV4_PACKET, 3.0)
    assert datagram is not None
    virtual = ("relay", b"\x01" * 20)
    assert b.receive_datagram(datagram, virtual, 3.0) == a.static_public
    assert peer_of(b, a).endpoint == virtual
    events = [b.next_event(), b.next_event()]
    assert EndpointChanged(a.static_public, virtual) in events
    b.send(a.static_public, IPV4_PACKET, 3.0)
    assert [addr for _, addr in b.datagrams_to_send(3.0)] == [virtual]


def test_unauthenticated_datagram_does_not_roam() -> None:
    _, a, b = established_pair()
    datagram = bytearray(a.encrypt_for(peer_of(a, b), IPV4_PACKET, 3.0) or b"")
    datagram[-1] ^= 1
    assert b.receive_datagram(bytes(datagram), "attacker", 3.0) is None
    assert peer_of(b, a).endpoint == "A"


def test_simultaneous_initiation_converges() -> None:
    switch, a, b = connected_pair()
    a.send(b.static_public, IPV4_PACKET, 0.0)
    b.send(a.static_public, IPV6_PACKET, 0.0)
    switch.pump(0.0)
    assert PacketReceived(a.static_public, IPV4_PACKET) in switch.events["B"]
    assert PacketReceived(b.static_public, IPV6_PACKET) in switch.events["A"]
    a.send(b.static_public, IPV4_PACKET, 1.0)
    b.send(a.static_public, IPV6_PACKET, 1.0)
    switch.pump(1.0)
    assert switch.events["B"].count(PacketReceived(a.static_public, IPV4_PACKET)) == 2
    assert switch.events["A"].count(PacketReceived(b.static_public, IPV6_PACKET)) == 2
    assert not a.stats.refusals() and not b.stats.refusals()


def test_receiver_indexes_are_unique_even_when_randomness_repeats() -> None:
    rng = random.Random(7)
    repeats = iter([b"\x01\x00\x00\x00"] * 3 + [b"\x02\x00\x00\x00"])

    def random_bytes(n: int) -> bytes:
        return next(repeats, rng.randbytes(4)) if n == 4 else rng.randbytes(n)

    a = SessionManager(rng.randbytes(32), random_bytes=random_bytes)
    b = SessionManager(rng.randbytes(32), random_bytes=rng.randbytes)
    a.add_peer(b.static_public, 0.0, endpoint="B")
    b.add_peer(a.static_public, 0.0, endpoint="A")
    switch = Switch()
    switch.add("A", a)
    switch.add("B", b)
    a.send(b.static_public, IPV4_PACKET, 0.0)
    switch.pump(0.0)
    current = peer_of(a, b).current
    assert current is not None and current.local_index == 1
    # The next handshake draws index 1 twice more; it is taken, so 2 it is.
    a.initiate_handshake(b.static_public, 10.0)
    pending = peer_of(a, b).pending
    assert pending is not None and pending.local_index == 2


def test_indexes_differ_across_handshakes() -> None:
    switch, a, b = established_pair()
    seen = set()
    for step in range(1, 6):
        now = step * 200.0  # every keypair has expired: a new handshake each time
        a.send(b.static_public, IPV4_PACKET, now)
        switch.pump(now)
        current = peer_of(a, b).current
        assert current is not None
        seen.add(current.local_index)
    assert len(seen) == 5


def test_for_identity_uses_key_file_key_and_network_psk() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    secret = NetworkSecret(b"a network secret of enough length")
    other = NetworkSecret(b"another network secret, not the same")
    a = SessionManager.for_identity(alice, secret)
    assert a.static_public == alice.x25519_public_key
    for bob_secret, works in ((secret, True), (other, False)):
        a = SessionManager.for_identity(alice, secret)
        b = SessionManager.for_identity(bob, bob_secret)
        a.add_peer(bob.x25519_public_key, 0.0, endpoint="B")
        b.add_peer(alice.x25519_public_key, 0.0, endpoint="A")
        switch = Switch()
        switch.add("A", a)
        switch.add("B", b)
        a.send(bob.x25519_public_key, IPV4_PACKET, 0.0)
        switch.pump(0.0)
        assert (PacketReceived(alice.x25519_public_key, IPV4_PACKET) in switch.events["B"]) is works
        assert (a.stats.response_decrypt_failed == 1) is not works


def test_open_network_psk_is_zero() -> None:
    assert NetworkSecret.open_network().session_psk == bytes(32)


def test_timers_scale() -> None:
    timers = Timers.scaled(10)
    assert timers.rekey_after_time == 12.0
    assert timers.reject_after_time == 18.0
    assert timers.keepalive_timeout == 1.0
    assert timers.rekey_timeout == 0.5
    assert timers.max_handshake_attempts == 18


def test_same_seeds_same_bytes() -> None:
    """With injected randomness and time, a run is reproducible (what the simulator needs)."""

    def run() -> list[bytes]:
        switch, a, b = connected_pair(timer_scale=10.0)
        for now in (0.0, 5.0, 13.0, 20.0):  # 13 s is past REKEY_AFTER_TIME / 10
            switch.run_timers(until=now)
            a.send(b.static_public, IPV4_PACKET, now)
            switch.pump(now)
        switch.run_timers(until=30.0)
        assert a.stats.handshakes_completed >= 2
        return [data for _, data, _ in switch.captured]

    first, second = run(), run()
    assert first == second and len(first) > 8
