"""SessionManager.encrypt_many: the batched seal must equal encrypt_for, packet by packet."""

from __future__ import annotations

from dataclasses import asdict

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.session.manager import SessionManager
from tests.unit.session.pair import (
    IPV4_PACKET,
    IPV6_PACKET,
    connected_pair,
    established_pair,
    peer_of,
)

ip_packets = st.lists(
    st.tuples(st.sampled_from([IPV4_PACKET, IPV6_PACKET]), st.binary(max_size=1300)).map(
        lambda parts: parts[0] + parts[1]
    ),
    min_size=1,
    max_size=40,
)


def opened(receiver: SessionManager, datagrams: list[bytes]) -> list[bytes]:
    payloads = []
    for datagram in datagrams:
        result = receiver.open_transport(datagram, "A", 1.0)
        assert result is not None
        payloads.append(result[1])
    return payloads


@settings(max_examples=25, deadline=None)
@given(ip_packets)
def test_encrypt_many_matches_encrypt_for_one_by_one(packets: list[bytes]) -> None:
    _, a, b = established_pair()
    _, a2, b2 = established_pair()  # the same seeds: the same keys and counters
    batched = a.encrypt_many(peer_of(a, b), packets, 1.0)
    assert batched is not None
    single = [a2.encrypt_for(peer_of(a2, b2), packet, 1.0) for packet in packets]
    assert batched == single
    assert a.stats.transport_sent == a2.stats.transport_sent
    # The receiver keeps what the IP header's length covers, as for any transport message.
    declared = [
        int.from_bytes(p[2:4], "big") if p[0] >> 4 == 4 else 40 + int.from_bytes(p[4:6], "big")
        for p in packets
    ]
    assert opened(b, batched) == [p[:n] for p, n in zip(packets, declared, strict=True)]


def test_encrypt_many_refuses_without_a_session_and_consumes_nothing() -> None:
    _, a, b = connected_pair()
    assert a.encrypt_many(peer_of(a, b), [IPV4_PACKET], 0.0) is None
    assert a.stats.transport_sent == 0


def transport_datagrams(a: SessionManager, b: SessionManager, payloads: list[bytes]) -> list[bytes]:
    datagrams = []
    for payload in payloads:
        datagram = a.encrypt_for(peer_of(a, b), payload, 1.0)
        assert datagram is not None
        datagrams.append(datagram)
    return datagrams


def tampered(datagram: bytes) -> bytes:
    return datagram[:-1] + bytes([datagram[-1] ^ 1])


@settings(max_examples=40, deadline=None)
@given(
    packets=ip_packets,
    script=st.lists(
        st.tuples(
            st.sampled_from(["send", "replay", "tamper", "keepalive", "short"]), st.integers(0, 50)
        ),
        max_size=60,
    ),
)
def test_open_many_matches_open_transport_one_by_one(
    packets: list[bytes], script: list[tuple[str, int]]
) -> None:
    """Replays, forgeries, keepalives and runts in a batch: the same results and counters."""
    _, a, b = established_pair()
    _, a2, b2 = established_pair()
    sent = transport_datagrams(a, b, packets)
    assert sent == transport_datagrams(a2, b2, packets)
    batch = list(sent)
    for action, pick in script:
        if action == "send":
            continue
        if action == "replay" and sent:
            batch.append(sent[pick % len(sent)])
        elif action == "tamper" and sent:
            batch.insert(pick % (len(batch) + 1), tampered(sent[pick % len(sent)]))
        elif action == "keepalive":
            (keepalive,) = transport_datagrams(a, b, [b""])
            assert transport_datagrams(a2, b2, [b""]) == [keepalive]
            batch.insert(pick % (len(batch) + 1), keepalive)
        elif action == "short":
            batch.insert(pick % (len(batch) + 1), b"\x04\x00\x00\x00" + bytes(pick % 40))
    batched = [(peer.public_key, payload) for peer, payload in b.open_many(batch, "A", 1.0)]
    single = []
    for datagram in batch:
        result = b2.open_transport(datagram, "A", 1.0)
        if result is not None:
            single.append((result[0].public_key, result[1]))
    assert batched == single
    assert asdict(b.stats) == asdict(b2.stats)
