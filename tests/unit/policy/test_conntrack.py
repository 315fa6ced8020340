"""Connection tracking: handshakes, replies, closes, timeouts, ICMP, fragments, IPv6.

Mallory is certified but no rule lets her open anything, so every packet of
hers that passes is a reply to something web1 opened; Alice may open tcp/22,
udp/53 and ping.
"""

from __future__ import annotations

import pytest

from gossipmesh.policy.conntrack import (
    ECHO_TIMEOUT,
    FRAGMENT_TIMEOUT,
    TCP_CLOSED_TIMEOUT,
    TCP_CLOSING_TIMEOUT,
    TCP_ESTABLISHED_TIMEOUT,
    TCP_SYN_TIMEOUT,
    UDP_REPLIED_TIMEOUT,
    UDP_TIMEOUT,
    State,
)
from gossipmesh.policy.filter import PacketFilter
from tests.unit.policy.filtering import (
    ALICE,
    ALICE4,
    ALICE6,
    LEAF4,
    MALLORY,
    MALLORY4,
    MALLORY6,
    WEB4,
    WEB6,
    web_filter,
)
from tests.unit.policy.packets import (
    ACK,
    FIN,
    MF,
    PSH,
    RST,
    SYN,
    echo4,
    echo6,
    fragment_header,
    icmp,
    icmp4_error,
    icmp6_error,
    ipv4,
    ipv6,
    tcp,
    tcp4,
    tcp6,
    udp,
    udp4,
    udp6,
)


def states(f: PacketFilter) -> list[int]:
    return [flow.state for flow in f.flows()]


def connect_out(f: PacketFilter, now: float = 0.0, sport: int = 40000) -> None:
    """web1 opens TCP to mallory:443 and the handshake completes."""
    f.note_outbound(tcp4(WEB4, MALLORY4, sport, 443, SYN), now)
    assert f.allow_inbound(tcp4(MALLORY4, WEB4, 443, sport, SYN | ACK), MALLORY, now)
    f.note_outbound(tcp4(WEB4, MALLORY4, sport, 443, ACK), now)


# --- TCP ---------------------------------------------------------------------------------


def test_an_allowed_handshake_becomes_an_established_flow() -> None:
    f = web_filter()
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 22, SYN), ALICE, 0.0)
    assert states(f) == [State.SYN_SENT]
    f.note_outbound(tcp4(WEB4, ALICE4, 22, 50000, SYN | ACK), 0.1)
    assert states(f) == [State.SYN_RECEIVED]
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 22, ACK), ALICE, 0.2)
    assert states(f) == [State.ESTABLISHED]
    (flow,) = f.flows()
    assert flow.fast_in and flow.fast_out and flow.opened_inbound
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 22, ACK | PSH, b"ls\n"), ALICE, 0.3)
    assert flow.seen == 0.3
    assert f.counters.new_inbound == 1 and f.counters.no_rule == 0


def test_a_denied_syn_keeps_no_state() -> None:
    f = web_filter()
    assert not f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 23, SYN), ALICE, 0.0)
    assert not f.allow_inbound(tcp4(MALLORY4, WEB4, 50000, 22, SYN), MALLORY, 0.0)
    assert len(f) == 0 and f.counters.no_rule == 2


def test_replies_to_a_flow_opened_here_need_no_rule() -> None:
    f = web_filter()
    connect_out(f)
    assert states(f) == [State.ESTABLISHED]
    assert f.allow_inbound(tcp4(MALLORY4, WEB4, 443, 40000, ACK, b"hello"), MALLORY, 1.0)
    assert f.counters.new_outbound == 1 and f.counters.new_inbound == 0


@pytest.mark.parametrize(
    "spoofed",
    [
        tcp4(MALLORY4, WEB4, 443, 40001, SYN | ACK),  # another port of ours
        tcp4(MALLORY4, WEB4, 444, 40000, ACK),  # another port of hers
        tcp4(MALLORY4, WEB4, 443, 40000, SYN),  # she opens the reverse tuple after it closed
        udp4(MALLORY4, WEB4, 443, 40000),  # the same ports, the other protocol
        tcp4(WEB4, MALLORY4, 40000, 443, ACK),  # our own direction, arriving from the mesh
        tcp6(MALLORY6, WEB6, 443, 40000, ACK),  # the same ports, the other family
        tcp4(MALLORY4, LEAF4, 443, 40000, ACK),  # to our leaf, not to us
    ],
)
def test_spoofed_replies_are_new_flows_and_denied(spoofed: bytes) -> None:
    f = web_filter()
    connect_out(f)
    f.allow_inbound(tcp4(MALLORY4, WEB4, 443, 40000, RST), MALLORY, 1.0)  # closed
    assert not f.allow_inbound(spoofed, MALLORY, 2.0)
    assert f.counters.no_rule == 1


def test_a_reply_direction_packet_without_state_is_a_new_flow_for_the_rules() -> None:
    """No state for it: a bare ACK is decided by the rules, then picked up, not trusted."""
    f = web_filter()
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 22, ACK), ALICE, 0.0)
    assert states(f) == [State.PICKED_UP]
    assert not f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 23, SYN | ACK), ALICE, 0.0)
    f.note_outbound(tcp4(WEB4, ALICE4, 22, 50000, ACK), 0.1)
    assert states(f) == [State.ESTABLISHED]


def test_a_rst_without_state_passes_if_allowed_and_opens_nothing() -> None:
    f = web_filter()
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 22, RST), ALICE, 0.0)
    assert not f.allow_inbound(tcp4(MALLORY4, WEB4, 50000, 22, RST), MALLORY, 0.0)
    assert len(f) == 0


def test_handshake_timeout() -> None:
    f = web_filter()
    f.note_outbound(tcp4(WEB4, MALLORY4, 40000, 443, SYN), 0.0)
    f.note_outbound(tcp4(WEB4, MALLORY4, 40001, 443, SYN), 0.0)
    assert f.allow_inbound(
        tcp4(MALLORY4, WEB4, 443, 40000, SYN | ACK), MALLORY, TCP_SYN_TIMEOUT - 1
    )
    assert not f.allow_inbound(
        tcp4(MALLORY4, WEB4, 443, 40001, SYN | ACK), MALLORY, TCP_SYN_TIMEOUT + 0.01
    )


def test_established_timeout_counts_from_the_last_packet() -> None:
    f = web_filter()
    connect_out(f)
    data = tcp4(MALLORY4, WEB4, 443, 40000, ACK)
    last = TCP_ESTABLISHED_TIMEOUT - 1
    assert f.allow_inbound(data, MALLORY, last)
    f.note_outbound(tcp4(WEB4, MALLORY4, 40000, 443, ACK), last + 3000)  # our side keeps it up
    assert f.allow_inbound(data, MALLORY, last + 3000 + TCP_ESTABLISHED_TIMEOUT - 1)
    assert not f.allow_inbound(data, MALLORY, last + 3000 + 2 * TCP_ESTABLISHED_TIMEOUT)
    assert f.counters.expired == 1 and len(f) == 0


def test_fin_shortens_the_timeout() -> None:
    f = web_filter()
    connect_out(f)
    assert f.allow_inbound(tcp4(MALLORY4, WEB4, 443, 40000, FIN | ACK), MALLORY, 10.0)
    assert states(f) == [State.CLOSING]
    ack = tcp4(MALLORY4, WEB4, 443, 40000, ACK)
    assert f.allow_inbound(ack, MALLORY, 10.0 + TCP_CLOSING_TIMEOUT - 1)  # still fast, refreshed
    assert not f.allow_inbound(ack, MALLORY, 10.0 + 2 * TCP_CLOSING_TIMEOUT)


def test_rst_closes_and_a_new_syn_is_a_new_flow() -> None:
    f = web_filter()
    connect_out(f)
    f.note_outbound(tcp4(WEB4, MALLORY4, 40000, 443, RST), 5.0)
    assert states(f) == [State.CLOSED]
    straggler = tcp4(MALLORY4, WEB4, 443, 40000, ACK)
    late = 5.0 + TCP_CLOSED_TIMEOUT - 1
    assert f.allow_inbound(straggler, MALLORY, late)
    assert not f.allow_inbound(straggler, MALLORY, late + TCP_CLOSED_TIMEOUT + 0.5)
    connect_out(f, 100.0)
    f.note_outbound(tcp4(WEB4, MALLORY4, 40000, 443, FIN | ACK), 101.0)
    f.note_outbound(tcp4(WEB4, MALLORY4, 40000, 443, SYN), 102.0)  # ports reused by us: fine
    assert states(f) == [State.SYN_SENT]
    assert f.counters.new_outbound == 3


def test_inbound_flows_reopened_on_a_closed_tuple_are_decided_again() -> None:
    f = web_filter()
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 22, SYN), ALICE, 0.0)
    f.note_outbound(tcp4(WEB4, ALICE4, 22, 50000, RST | ACK), 0.1)
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50000, 22, SYN), ALICE, 0.2)
    assert f.counters.new_inbound == 2


def test_ipv6_tcp() -> None:
    f = web_filter()
    assert f.allow_inbound(tcp6(ALICE6, WEB6, 50000, 22, SYN), ALICE, 0.0)
    f.note_outbound(tcp6(WEB6, ALICE6, 22, 50000, SYN | ACK), 0.0)
    assert f.allow_inbound(tcp6(ALICE6, WEB6, 50000, 22, ACK), ALICE, 0.0)
    assert states(f) == [State.ESTABLISHED]
    assert f.allow_inbound(tcp6(ALICE6, WEB6, 50000, 22, ACK, b"x" * 1000), ALICE, 1.0)
    assert not f.allow_inbound(tcp6(MALLORY6, WEB6, 1, 22, SYN), MALLORY, 1.0)


def test_identity_does_not_cover_a_subnet_behind_the_node() -> None:
    f = web_filter()
    assert not f.allow_inbound(tcp4("10.30.0.5", WEB4, 50000, 22, SYN), ALICE, 0.0)


def test_leaf_destinations_follow_address_rules() -> None:
    f = web_filter()
    assert f.allow_inbound(tcp4(MALLORY4, LEAF4, 1234, 80, SYN), MALLORY, 0.0)
    assert not f.allow_inbound(tcp4(MALLORY4, WEB4, 1234, 80, SYN), MALLORY, 0.0)
    assert not f.allow_inbound(tcp4(ALICE4, LEAF4, 1234, 22, SYN), ALICE, 0.0)


# --- UDP ---------------------------------------------------------------------------------


def test_udp_reply_timeouts() -> None:
    f = web_filter()
    f.note_outbound(udp4(WEB4, MALLORY4, 5000, 53), 0.0)
    f.note_outbound(udp4(WEB4, MALLORY4, 5001, 53), 0.0)
    assert states(f) == [State.UNREPLIED, State.UNREPLIED]
    reply = udp4(MALLORY4, WEB4, 53, 5000)
    assert f.allow_inbound(reply, MALLORY, UDP_TIMEOUT - 1)
    assert sorted(states(f)) == [State.UNREPLIED, State.REPLIED]
    assert not f.allow_inbound(udp4(MALLORY4, WEB4, 53, 5001), MALLORY, UDP_TIMEOUT + 1)
    assert f.allow_inbound(reply, MALLORY, UDP_TIMEOUT - 1 + UDP_REPLIED_TIMEOUT - 1)
    assert not f.allow_inbound(reply, MALLORY, UDP_TIMEOUT + 2 * UDP_REPLIED_TIMEOUT)


def test_udp_opened_from_the_mesh() -> None:
    f = web_filter()
    query = udp4(ALICE4, WEB4, 6000, 53)
    assert f.allow_inbound(query, ALICE, 0.0)
    assert f.allow_inbound(query, ALICE, 1.0)  # the opener's own direction needs no reply
    f.note_outbound(udp4(WEB4, ALICE4, 53, 6000), 1.0)
    assert states(f) == [State.REPLIED]
    assert not f.allow_inbound(udp4(ALICE4, WEB4, 6000, 54), ALICE, 1.0)
    assert f.allow_inbound(udp6(ALICE6, WEB6, 6000, 53), ALICE, 1.0)


# --- ICMP --------------------------------------------------------------------------------


def test_echo_needs_a_rule_or_a_request_from_here() -> None:
    f = web_filter()
    assert f.allow_inbound(echo4(ALICE4, WEB4, 9), ALICE, 0.0)
    f.note_outbound(echo4(WEB4, ALICE4, 9, reply=True), 0.0)
    assert not f.allow_inbound(echo4(MALLORY4, WEB4, 9), MALLORY, 0.0)
    assert not f.allow_inbound(echo4(MALLORY4, WEB4, 9, reply=True), MALLORY, 0.0)  # unasked
    f.note_outbound(echo4(WEB4, MALLORY4, 7), 1.0)
    assert f.allow_inbound(echo4(MALLORY4, WEB4, 7, reply=True), MALLORY, 2.0)
    assert not f.allow_inbound(echo4(MALLORY4, WEB4, 7), MALLORY, 2.0)  # a request, not a reply
    assert not f.allow_inbound(echo4(MALLORY4, WEB4, 8, reply=True), MALLORY, 2.0)
    assert not f.allow_inbound(echo4(MALLORY4, WEB4, 7, reply=True), MALLORY, 2.0 + ECHO_TIMEOUT)
    f.note_outbound(echo6(WEB6, MALLORY6, 7), 100.0)
    assert f.allow_inbound(echo6(MALLORY6, WEB6, 7, reply=True), MALLORY, 100.5)
    assert not f.allow_inbound(echo4(MALLORY4, WEB4, 7, reply=True), MALLORY, 100.5)


def test_icmp_errors_pass_only_about_flows_sent_from_here() -> None:
    f = web_filter()
    query = udp4(WEB4, MALLORY4, 5000, 53)
    f.note_outbound(query, 0.0)
    assert f.allow_inbound(icmp4_error(MALLORY4, WEB4, query), MALLORY, 1.0)
    assert f.allow_inbound(icmp4_error("100.64.7.7", WEB4, query, kind=11), None, 1.0)  # a router
    forged = udp4(WEB4, MALLORY4, 5001, 53)
    assert not f.allow_inbound(icmp4_error(MALLORY4, WEB4, forged), MALLORY, 1.0)
    misaddressed = icmp4_error(MALLORY4, LEAF4, query)  # about our packet, sent to our leaf
    assert not f.allow_inbound(misaddressed, MALLORY, 1.0)
    theirs = udp4(MALLORY4, WEB4, 53, 5000)  # quoting the reply direction: never sent from here
    assert not f.allow_inbound(icmp4_error(MALLORY4, WEB4, theirs), MALLORY, 1.0)
    assert not f.allow_inbound(icmp4_error(MALLORY4, WEB4, query), MALLORY, UDP_TIMEOUT + 1)
    assert (f.counters.related, f.counters.icmp_unrelated) == (2, 4)


def test_errors_about_a_flow_must_come_through_the_peer_it_talks_to() -> None:
    """Mallory guessing the ports of web1's flow with alice cannot cut it or shrink its MTU."""
    f = web_filter()
    segment = tcp4(WEB4, ALICE4, 40000, 5432, ACK)
    f.note_outbound(tcp4(WEB4, ALICE4, 40000, 5432, SYN), 0.0)
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 5432, 40000, SYN | ACK), ALICE, 0.1)
    f.note_outbound(segment, 0.2)
    too_big = icmp4_error(MALLORY4, WEB4, segment, kind=3, code=4)
    assert not f.allow_inbound(too_big, MALLORY, 1.0)
    assert not f.allow_inbound(icmp4_error("100.64.7.7", WEB4, segment), None, 1.0)
    assert f.allow_inbound(icmp4_error(ALICE4, WEB4, segment, kind=3, code=4), ALICE, 1.0)
    behind_alice = icmp4_error("10.30.0.1", WEB4, segment, kind=11)  # a router she routes
    assert f.allow_inbound(behind_alice, ALICE, 1.0)
    assert (f.counters.related, f.counters.icmp_unrelated) == (2, 2)
    inbound = tcp4(WEB4, ALICE4, 22, 50001, SYN | ACK)  # a flow alice opened: the same rule
    assert f.allow_inbound(tcp4(ALICE4, WEB4, 50001, 22, SYN), ALICE, 2.0)
    f.note_outbound(inbound, 2.0)
    assert not f.allow_inbound(icmp4_error(MALLORY4, WEB4, inbound), MALLORY, 2.5)
    assert f.allow_inbound(icmp4_error(ALICE4, WEB4, inbound), ALICE, 2.5)


def test_packet_too_big_about_an_ipv6_tcp_flow_and_an_echo() -> None:
    f = web_filter()
    segment = tcp6(WEB6, MALLORY6, 40000, 443, SYN)
    f.note_outbound(segment, 0.0)
    assert f.allow_inbound(icmp6_error(MALLORY6, WEB6, segment), MALLORY, 0.5)
    ping = echo4(WEB4, MALLORY4, 3)
    f.note_outbound(ping, 0.0)
    assert f.allow_inbound(icmp4_error("100.64.7.7", WEB4, ping, kind=11), None, 0.5)


def test_redirects_and_router_messages_are_refused_whatever_the_rules() -> None:
    f = web_filter()
    assert not f.allow_inbound(ipv4(ALICE4, WEB4, 1, icmp(5, 1)), ALICE, 0.0)
    assert not f.allow_inbound(ipv6(ALICE6, WEB6, 58, icmp(137)), ALICE, 0.0)
    assert f.counters.icmp_refused == 2
    assert f.allow_inbound(ipv4(ALICE4, WEB4, 1, icmp(13)), ALICE, 0.0)  # timestamp: icmp rule
    assert not f.allow_inbound(ipv4(MALLORY4, WEB4, 1, icmp(13)), MALLORY, 0.0)
    assert len(f) == 0


# --- fragments ---------------------------------------------------------------------------


def test_later_fragments_follow_an_admitted_first_fragment() -> None:
    f = web_filter()
    first = ipv4(ALICE4, WEB4, 17, udp(6000, 53, bytes(1200)), fragment=MF, ident=41)
    later = ipv4(ALICE4, WEB4, 17, bytes(600), fragment=151, ident=41)
    stray = ipv4(ALICE4, WEB4, 17, bytes(600), fragment=151, ident=42)
    assert not f.allow_inbound(later, ALICE, 0.0)  # before its first fragment: dropped
    assert f.allow_inbound(first, ALICE, 0.1)
    assert f.allow_inbound(later, ALICE, 0.2)
    assert not f.allow_inbound(stray, ALICE, 0.2)
    assert not f.allow_inbound(later, ALICE, 0.1 + FRAGMENT_TIMEOUT)
    assert f.counters.fragment == 3


def test_fragments_of_a_denied_datagram_are_dropped() -> None:
    f = web_filter()
    first = ipv4(MALLORY4, WEB4, 17, udp(6000, 53, bytes(1200)), fragment=MF, ident=5)
    later = ipv4(MALLORY4, WEB4, 17, bytes(600), fragment=151, ident=5)
    assert not f.allow_inbound(first, MALLORY, 0.0)
    assert not f.allow_inbound(later, MALLORY, 0.0)
    assert (f.counters.no_rule, f.counters.fragment) == (1, 1)


def test_fragmented_replies_and_ipv6_fragments() -> None:
    f = web_filter()
    f.note_outbound(udp6(WEB6, MALLORY6, 5000, 53), 0.0)
    first = ipv6(
        MALLORY6,
        WEB6,
        17,
        udp(53, 5000, bytes(1200)),
        extensions=[(44, fragment_header(0, True, 77))],
    )
    later = ipv6(MALLORY6, WEB6, 17, bytes(500), extensions=[(44, fragment_header(151, False, 77))])
    other = ipv6(MALLORY6, WEB6, 17, bytes(500), extensions=[(44, fragment_header(151, False, 78))])
    assert f.allow_inbound(first, MALLORY, 0.5)
    assert f.allow_inbound(later, MALLORY, 0.5)
    assert not f.allow_inbound(other, MALLORY, 0.5)


def test_the_tiny_fragment_attack_is_malformed() -> None:
    f = web_filter()
    connect_out(f)
    overlap = ipv4(MALLORY4, WEB4, 6, tcp(443, 40000, SYN)[8:], fragment=1, ident=9)
    assert not f.allow_inbound(overlap, MALLORY, 1.0)
    assert f.counters.malformed == 1
