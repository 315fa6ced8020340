"""Every refusal: silent on the wire (nothing sent), counted, and never raised."""

from __future__ import annotations

import pytest

from gossipmesh.session import messages
from gossipmesh.session.crypto import LABEL_MAC1, hash_bytes, mac
from gossipmesh.session.events import PacketReceived
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.peer import REPLAY_WINDOW
from gossipmesh.session.timers import REJECT_AFTER_MESSAGES
from tests.unit.session.pair import (
    IPV4_PACKET,
    connected_pair,
    established_pair,
    make_manager,
    peer_of,
)


def initiation_from(a: SessionManager, b: SessionManager, now: float = 0.0) -> bytes:
    a.initiate_handshake(b.static_public, now)
    ((data, _),) = a.datagrams_to_send(now)
    assert data[0] == 1
    return data


def refused_silently(manager: SessionManager, data: bytes, counter: str, now: float = 0.0) -> None:
    before = getattr(manager.stats, counter)
    assert manager.receive_datagram(data, "somewhere", now) is None
    assert getattr(manager.stats, counter) == before + 1, manager.stats.refusals()
    assert manager.datagrams_to_send(now) == []


def transport_from(a: SessionManager, b: SessionManager, now: float = 1.0) -> bytes:
    datagram = a.encrypt_for(peer_of(a, b), IPV4_PACKET, now)
    assert datagram is not None
    return datagram


def test_initiation_from_unknown_static_key() -> None:
    _, _a, b = connected_pair()
    stranger = make_manager(3)
    stranger.add_peer(b.static_public, 0.0, endpoint="B")
    refused_silently(b, initiation_from(stranger, b), "unknown_peer")


def test_initiation_encrypted_to_another_static_key() -> None:
    """A valid mac1 for B does not help: the static key decrypts only for its responder."""
    _, a, b = connected_pair()
    other = make_manager(4)
    a.add_peer(other.static_public, 0.0, endpoint="O")
    body = initiation_from(a, other)[: -messages.MACS_SIZE]
    forged = body + mac(hash_bytes(LABEL_MAC1, b.static_public), body) + bytes(16)
    refused_silently(b, forged, "initiation_decrypt_failed")


def test_wrong_preshared_key() -> None:
    a, b = make_manager(1), make_manager(2)
    a.add_peer(b.static_public, 0.0, endpoint="B", preshared_key=b"\x01" * 32)
    b.add_peer(a.static_public, 0.0, endpoint="A", preshared_key=b"\x02" * 32)
    b.receive_datagram(initiation_from(a, b), "A", 0.0)
    ((response, _),) = b.datagrams_to_send(0.0)
    refused_silently(a, response, "response_decrypt_failed")
    assert peer_of(a, b).current is None


@pytest.mark.parametrize("position", [-17, 20, 100])
def test_bad_mac1(position: int) -> None:
    _, a, b = connected_pair()
    data = bytearray(initiation_from(a, b))
    data[position] ^= 0x01
    refused_silently(b, bytes(data), "bad_mac1")


def test_bad_mac1_on_response() -> None:
    _, a, b = connected_pair()
    b.receive_datagram(initiation_from(a, b), "A", 0.0)
    ((response, _),) = b.datagrams_to_send(0.0)
    damaged = bytearray(response)
    damaged[-20] ^= 0x80
    refused_silently(a, bytes(damaged), "bad_mac1")


def test_replayed_initiation() -> None:
    _, a, b = connected_pair()
    initiation = initiation_from(a, b)
    assert b.receive_datagram(initiation, "A", 0.0) == a.static_public
    assert len(b.datagrams_to_send(0.0)) == 1
    refused_silently(b, initiation, "replayed_initiation", now=5.0)


def test_older_initiation_after_newer_is_replay() -> None:
    _, a, b = connected_pair()
    old = initiation_from(a, b, now=0.0)
    new = initiation_from(a, b, now=10.0)
    assert b.receive_datagram(new, "A", 20.0) == a.static_public
    b.datagrams_to_send(20.0)
    refused_silently(b, old, "replayed_initiation", now=21.0)


def test_initiation_flood() -> None:
    _, a, b = connected_pair()
    first = initiation_from(a, b, now=0.0)
    second = initiation_from(a, b, now=10.0)
    assert b.receive_datagram(first, "A", 30.0) is not None
    b.datagrams_to_send(30.0)
    refused_silently(b, second, "initiation_flood", now=30.001)


def test_replayed_transport() -> None:
    _switch, a, b = established_pair()
    datagram = transport_from(a, b)
    assert b.receive_datagram(datagram, "A", 1.0) == a.static_public
    refused_silently(b, datagram, "transport_replayed", now=1.0)
    packets = [e for e in iter(b.next_event, None) if isinstance(e, PacketReceived)]
    assert len(packets) == 1


def test_transport_older_than_window() -> None:
    _, a, b = established_pair()
    old = transport_from(a, b)
    for _ in range(REPLAY_WINDOW + 1):
        assert b.open_transport(transport_from(a, b), "A", 1.0) is not None
    refused_silently(b, old, "transport_too_old", now=1.0)


def test_reordering_inside_window_accepted_once() -> None:
    _, a, b = established_pair()
    datagrams = [transport_from(a, b) for _ in range(6)]
    for index in (5, 2, 0, 4, 1, 3):
        assert b.open_transport(datagrams[index], "A", 1.0) is not None
    for datagram in datagrams:
        refused_silently(b, datagram, "transport_replayed", now=1.0)


def test_counter_at_reject_after_messages() -> None:
    _, a, b = established_pair()
    keypair = peer_of(a, b).current
    assert keypair is not None
    counter = REJECT_AFTER_MESSAGES.to_bytes(8, "little")
    ciphertext = keypair.sending.encrypt(b"\x00" * 4 + counter, IPV4_PACKET, None)
    refused_silently(b, keypair.prefix + counter + ciphertext, "transport_counter_rejected")


def test_sender_stops_at_reject_after_messages() -> None:
    _, a, b = established_pair()
    keypair = peer_of(a, b).current
    assert keypair is not None
    keypair.send_counter = REJECT_AFTER_MESSAGES
    assert a.encrypt_for(peer_of(a, b), IPV4_PACKET, 6.0) is None
    assert [data[0] for data, _ in a.datagrams_to_send(6.0)] == [1]  # a new handshake instead
    assert list(peer_of(a, b).staged) == [IPV4_PACKET]


def test_tampered_transport() -> None:
    _, a, b = established_pair()
    datagram = bytearray(transport_from(a, b))
    datagram[20] ^= 0x04
    refused_silently(b, bytes(datagram), "transport_authentication_failed", now=1.0)


def test_transport_on_expired_keypair() -> None:
    _, a, b = established_pair()
    datagram = transport_from(a, b, now=1.0)
    refused_silently(b, datagram, "transport_keypair_expired", now=180.0)


@pytest.mark.parametrize(
    ("kind", "size"),
    [
        (1, messages.INITIATION_SIZE - 1),
        (1, messages.INITIATION_SIZE + 1),
        (2, messages.RESPONSE_SIZE - 1),
        (2, messages.RESPONSE_SIZE + 1),
        (3, messages.COOKIE_REPLY_SIZE - 1),
        (3, messages.COOKIE_REPLY_SIZE + 1),
        (4, messages.TRANSPORT_MINIMUM_SIZE - 1),
        (4, messages.MAX_TRANSPORT_SIZE + 1),
        (4, 4),
        (1, 1),
    ],
)
def test_truncated_and_oversized(kind: int, size: int) -> None:
    _, _a, b = established_pair()
    refused_silently(b, bytes([kind]) + bytes(size - 1), "malformed", now=1.0)


def test_truncated_real_initiation() -> None:
    _, a, b = connected_pair()
    initiation = initiation_from(a, b)
    refused_silently(b, initiation[:-1], "malformed")
    refused_silently(b, initiation + b"\x00", "malformed")


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x05" + bytes(40), b"\xff" * 148])
def test_unknown_type(data: bytes) -> None:
    _, _a, b = established_pair()
    refused_silently(b, data, "unknown_type", now=1.0)


def test_nonzero_reserved_bytes() -> None:
    _, a, b = established_pair()
    datagram = bytearray(transport_from(a, b))
    datagram[2] = 1
    refused_silently(b, bytes(datagram), "unknown_type", now=1.0)
    initiation = bytearray(initiation_from(a, b, now=10.0))
    initiation[3] = 1
    refused_silently(b, bytes(initiation), "malformed", now=10.0)


def test_unknown_receiver_index() -> None:
    _, a, b = established_pair()
    datagram = bytearray(transport_from(a, b))
    datagram[4:8] = (int.from_bytes(datagram[4:8], "little") ^ 0x5A5A).to_bytes(4, "little")
    refused_silently(b, bytes(datagram), "unknown_receiver_index", now=1.0)


def test_response_to_unknown_index() -> None:
    _, a, b = connected_pair()
    b.receive_datagram(initiation_from(a, b), "A", 0.0)
    ((response, _),) = b.datagrams_to_send(0.0)
    # A abandons its handshake (a newer one replaces it): the old response is unknown.
    a.initiate_handshake(b.static_public, 10.0)
    a.datagrams_to_send(10.0)
    refused_silently(a, response, "unknown_receiver_index", now=10.0)


def test_cookie_reply_that_does_not_decrypt() -> None:
    _, a, b = connected_pair()
    pending = initiation_from(a, b)
    sender = int.from_bytes(pending[4:8], "little")
    forged = messages.build_cookie_reply(sender, bytes(24), bytes(32))
    refused_silently(a, forged, "cookie_reply_invalid")


def test_cookie_reply_to_unknown_index() -> None:
    _, a, _b = connected_pair()
    forged = messages.build_cookie_reply(12345, bytes(24), bytes(32))
    refused_silently(a, forged, "unknown_receiver_index")


def test_low_order_ephemeral_is_refused() -> None:
    _, a, b = connected_pair()
    body = bytearray(initiation_from(a, b)[: -messages.MACS_SIZE])
    body[8:40] = bytes(32)  # the all-zero point
    forged = bytes(body) + mac(hash_bytes(LABEL_MAC1, b.static_public), bytes(body)) + bytes(16)
    refused_silently(b, forged, "initiation_decrypt_failed")


def test_peer_key_validation() -> None:
    a = make_manager(1)
    with pytest.raises(ValueError):
        a.add_peer(bytes(31), 0.0)
    with pytest.raises(ValueError):
        a.add_peer(a.static_public, 0.0)
    with pytest.raises(ValueError):
        a.add_peer(bytes(32), 0.0)  # low order


def test_send_to_unknown_peer_is_counted() -> None:
    a = make_manager(1)
    assert a.send(bytes(range(32)), IPV4_PACKET, 0.0) is False
    assert a.stats.send_unknown_peer == 1
