"""The filter under attack and over time: floods, the table bound, expiry, new policies, junk."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.policy.conntrack import EXPIRY_BUDGET, UDP_REPLIED_TIMEOUT, State
from gossipmesh.policy.filter import PacketFilter
from gossipmesh.policy.model import parse_policy
from gossipmesh.policy.peer import PeerIdentity
from tests.unit.policy.filtering import (
    ALICE,
    ALICE4,
    ALICE6,
    BOB,
    BOB4,
    MALLORY,
    MALLORY4,
    POLICY,
    POLICY_TEXT,
    WEB,
    WEB4,
    WEB6,
    web_filter,
)
from tests.unit.policy.packets import (
    ACK,
    FIN,
    RST,
    SYN,
    echo4,
    ipv4,
    ipv6,
    packed,
    tcp4,
    udp4,
    udp6,
)


def establish(f: PacketFilter, sport: int, now: float = 0.0) -> None:
    """Alice connects to web1:22 from `sport`; the handshake completes."""
    assert f.allow_inbound(tcp4(ALICE4, WEB4, sport, 22, SYN), ALICE, now)
    f.note_outbound(tcp4(WEB4, ALICE4, 22, sport, SYN | ACK), now)
    assert f.allow_inbound(tcp4(ALICE4, WEB4, sport, 22, ACK), ALICE, now)


def data(sport: int) -> bytes:
    return tcp4(ALICE4, WEB4, sport, 22, ACK, b"x")


def test_a_syn_flood_cannot_evict_established_flows() -> None:
    f = web_filter(max_flows=64)
    for sport in range(1000, 1032):
        establish(f, sport)
    for sport in range(20000, 21000):  # allowed SYNs that never complete
        f.allow_inbound(tcp4(ALICE4, WEB4, sport, 22, SYN), ALICE, 1.0)
    assert len(f) == 64
    assert f.counters.evicted == 1000 - 32
    assert all(f.allow_inbound(data(sport), ALICE, 2.0) for sport in range(1000, 1032))
    assert sum(flow.state == State.ESTABLISHED for flow in f.flows()) == 32


def test_a_table_of_confirmed_flows_refuses_new_ones_and_counts_it() -> None:
    f = web_filter(max_flows=16)
    for sport in range(1000, 1016):
        establish(f, sport)
    assert not f.allow_inbound(tcp4(ALICE4, WEB4, 2000, 22, SYN), ALICE, 1.0)
    f.note_outbound(udp4(WEB4, MALLORY4, 5000, 53), 1.0)  # our own new flow has no room either
    assert not f.allow_inbound(udp4(MALLORY4, WEB4, 53, 5000), MALLORY, 1.0)
    assert f.counters.table_full == 2 and len(f) == 16
    f.allow_inbound(tcp4(ALICE4, WEB4, 1000, 22, RST), ALICE, 1.0)  # one closes: evictable now
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 2000, 22, SYN), ALICE, 1.0)
    assert f.counters.evicted == 1


def test_one_source_cannot_hold_more_than_its_share() -> None:
    f = web_filter(max_flows=64, max_flows_per_source=10)
    opened = [
        f.allow_inbound(tcp4(ALICE4, WEB4, sport, 22, SYN), ALICE, 0.0) for sport in range(20)
    ]
    assert opened == [True] * 10 + [False] * 10
    assert f.counters.source_limit == 10
    assert f.allow_inbound(tcp4(BOB4, WEB4, 5, 22, SYN), BOB, 0.0)
    f.allow_inbound(tcp4(ALICE4, WEB4, 0, 22, RST), ALICE, 1.0)  # closed, but still held
    assert not f.allow_inbound(tcp4(ALICE4, WEB4, 99, 22, SYN), ALICE, 1.0)
    f.expire(1.0 + 60)  # the RST flow is gone: one slot free again
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 99, 22, SYN), ALICE, 61.0)
    for sport in range(50):  # flows opened from here count against nobody's share
        f.note_outbound(tcp4(WEB4, ALICE4, 30000 + sport, 443, SYN), 61.0)
    assert f.counters.new_outbound == 50


def test_a_flood_of_denied_flows_keeps_nothing() -> None:
    f = web_filter()
    for sport in range(5000):
        assert not f.allow_inbound(tcp4(MALLORY4, WEB4, sport, 22, SYN), MALLORY, 0.0)
        assert not f.allow_inbound(udp4(ALICE4, WEB4, sport, 54), ALICE, 0.0)
    assert len(f) == 0 and f.counters.no_rule == 10000
    assert len(f.tracker.fragments) == 0


def test_expiry_is_incremental_and_exact() -> None:
    """Expired flows are removed a budget at a time; one not yet removed still does not pass."""
    f = web_filter()
    count = 3 * EXPIRY_BUDGET
    for sport in range(count):  # replied flows: their packets take the fast path
        f.note_outbound(udp4(WEB4, MALLORY4, 10000 + sport, 53), 0.0)
        assert f.allow_inbound(udp4(MALLORY4, WEB4, 53, 10000 + sport), MALLORY, 0.0)
    assert len(f) == count
    later = UDP_REPLIED_TIMEOUT + 1
    assert f.expire(later) == EXPIRY_BUDGET
    assert len(f) == count - EXPIRY_BUDGET
    last = udp4(MALLORY4, WEB4, 53, 10000 + count - 1)
    assert not f.allow_inbound(last, MALLORY, later)  # expired, though still in the table
    assert not f.filter_inbound([last], MALLORY, later)
    while f.expire(later):
        pass
    assert len(f) == 0 and f.counters.expired == count


def test_busy_flows_do_not_grow_the_deadline_heap() -> None:
    f = web_filter()
    establish(f, 1000)
    now = 0.0
    for sport in range(3000):  # churn: open and reset flows, refresh one busy flow
        now += 1.0
        f.note_outbound(tcp4(WEB4, MALLORY4, 20000 + sport % 500, 443, SYN), now)
        f.allow_inbound(tcp4(MALLORY4, WEB4, 443, 20000 + sport % 500, RST), MALLORY, now)
        assert f.allow_inbound(data(1000), ALICE, now)
    assert len(f.table._heap) <= 2 * len(f) + 1024
    assert len(f) <= 12  # the busy flow and the RST flows of the last 10 s


def test_a_new_policy_drops_the_flows_it_no_longer_allows() -> None:
    f = web_filter()
    establish(f, 1000)
    assert f.allow_inbound(udp4(ALICE4, WEB4, 6000, 53), ALICE, 0.0)
    f.note_outbound(udp4(WEB4, MALLORY4, 5000, 53), 0.0)  # ours: no rule needed, stays
    stricter = parse_policy(POLICY_TEXT.replace('ports = ["22"]', 'ports = ["2222"]'))
    assert f.set_policy(stricter, 1.0) == 1
    assert not f.allow_inbound(data(1000), ALICE, 1.0)
    assert f.allow_inbound(udp4(ALICE4, WEB4, 6000, 53), ALICE, 1.0)
    assert f.allow_inbound(udp4(MALLORY4, WEB4, 53, 5000), MALLORY, 1.0)
    assert f.counters.revoked == 1
    assert f.set_policy(None, 2.0) == 1  # no policy at all: nothing from the mesh stays
    assert [flow.opened_inbound for flow in f.flows()] == [False]


def test_without_a_policy_nothing_new_comes_in_but_replies_do() -> None:
    f = PacketFilter(WEB, None)
    assert f.policy is None
    assert not f.allow_inbound(tcp4(ALICE4, WEB4, 1000, 22, SYN), ALICE, 0.0)
    assert not f.allow_inbound(echo4(ALICE4, WEB4, 1), ALICE, 0.0)
    assert f.counters.no_policy == 2
    f.note_outbound(tcp4(WEB4, ALICE4, 40000, 22, SYN), 0.0)
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 22, 40000, SYN | ACK), ALICE, 0.1)


def test_malformed_packets_are_counted_not_raised() -> None:
    f = web_filter()
    establish(f, 1000)
    junk = [
        b"",
        b"\x45",
        b"\x45" + bytes(30),
        b"\x60" + bytes(20),
        b"\x4f" + data(1000)[1:],  # IHL 15
        b"\x43" + data(1000)[1:],  # IHL 3
        data(1000)[:30],  # truncated inside the TCP header
        b"\x00" * 60,
        b"\xff" * 60,
        ipv4(ALICE4, WEB4, 6, b"\x00" * 4),
    ]
    assert f.filter_inbound(junk, ALICE, 1.0) == []
    assert not any(f.allow_inbound(packet, ALICE, 1.0) for packet in junk)
    assert f.counters.malformed == 2 * len(junk)
    for packet in junk:
        f.note_outbound(packet, 1.0)
    assert len(f) == 1


def test_a_node_identity_is_normalised_and_checked() -> None:
    peer = PeerIdentity("Alice", frozenset({"DEV"}), frozenset({packed(ALICE4)}))
    assert peer.principal == ("alice", frozenset({"dev"}))
    try:
        PeerIdentity("x", frozenset(), frozenset({b"\x01\x02"}))
    except ValueError as exc:
        assert "4 or 16" in str(exc)
    else:
        raise AssertionError("a 2-byte address was accepted")


# --- one packet at a time and in batches give the same answers -----------------------------

POOL = [
    tcp4(ALICE4, WEB4, 1000, 22, SYN),
    tcp4(ALICE4, WEB4, 1000, 22, ACK),
    tcp4(ALICE4, WEB4, 1001, 22, ACK | FIN),
    tcp4(ALICE4, WEB4, 1001, 23, SYN),
    tcp4(MALLORY4, WEB4, 443, 40000, SYN | ACK),
    tcp4(MALLORY4, WEB4, 443, 40000, ACK),
    tcp4(MALLORY4, WEB4, 443, 40000, RST),
    udp4(ALICE4, WEB4, 7, 53),
    udp4(MALLORY4, WEB4, 53, 5000),
    echo4(ALICE4, WEB4, 3),
    b"\x45" + bytes(10),
]
OUT = [
    tcp4(WEB4, ALICE4, 22, 1000, SYN | ACK),
    tcp4(WEB4, ALICE4, 22, 1001, ACK),
    tcp4(WEB4, MALLORY4, 40000, 443, SYN),
    tcp4(WEB4, MALLORY4, 40000, 443, ACK),
    udp4(WEB4, MALLORY4, 5000, 53),
]
steps = st.lists(
    st.tuples(
        st.booleans(),
        st.lists(st.sampled_from(POOL), min_size=1, max_size=5),
        st.lists(st.sampled_from(OUT), max_size=2),
        st.floats(0, 100),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_batches_and_single_packets_agree(
    script: list[tuple[bool, list[bytes], list[bytes], float]],
) -> None:
    single, batched = web_filter(max_flows=8), web_filter(max_flows=8)
    now = 0.0
    for use_many, inbound, outbound, step in script:
        now += step
        for packet in outbound:
            single.note_outbound(packet, now)
        if use_many:
            batched.note_outbound_many(outbound, now)
        else:
            for packet in outbound:
                batched.note_outbound(packet, now)
        expected = [p for p in inbound if single.allow_inbound(p, ALICE, now)]
        assert batched.filter_inbound(inbound, ALICE, now) == expected
    assert single.counters == batched.counters
    assert sorted(f.state for f in single.flows()) == sorted(f.state for f in batched.flows())


def test_a_flow_recovers_how_it_was_opened_from_its_key() -> None:
    """What a new policy version re-decides with: not stored apart, so it must round-trip."""
    text = POLICY_TEXT + '[[rules]]\nfrom = ["group:dev"]\nto = ["*"]\nproto = "any"\n'
    f = PacketFilter(WEB, parse_policy(text))
    opened = {
        tcp4(ALICE4, WEB4, 1000, 22, SYN): (6, 22),
        udp6(ALICE6, WEB6, 1001, 53): (17, 53),
        echo4(ALICE4, WEB4, 77): (1, 0),
        ipv4(ALICE4, WEB4, 47, bytes(8)): (47, 0),
        ipv6(ALICE6, WEB6, 132, bytes(12)): (132, 0),
    }
    for packet in opened:
        assert f.allow_inbound(packet, ALICE, 0.0)
    found = {flow.opening() for flow in f.flows()}
    expected = set()
    for packet, (protocol, port) in opened.items():
        v4 = packet[0] >> 4 == 4
        source, destination = (
            (packet[12:16], packet[16:20]) if v4 else (packet[8:24], packet[24:40])
        )
        expected.add((source, destination, protocol, port))
    assert found == expected
    assert f.set_policy(POLICY, 1.0) == 2  # the GRE and SCTP flows needed the 'any' rule
    assert {flow.opening()[2] for flow in f.flows()} == {6, 17, 1}
