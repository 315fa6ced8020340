"""Under load, an initiation without a valid mac2 costs one cookie reply and nothing more."""

from __future__ import annotations

from gossipmesh.session.events import HandshakeCompleted
from tests.unit.session.pair import IPV4_PACKET, connected_pair, peer_of


def test_cookie_dance_under_load() -> None:
    switch, a, b = connected_pair(timer_scale=10.0, under_load_threshold=2)
    # A flood of junk handshake messages (right size, bad mac1) puts B under load.
    for _ in range(3):
        b.receive_datagram(b"\x01\x00\x00\x00" + bytes(144), "flood", 0.0)
    assert b.stats.bad_mac1 == 3

    a.send(b.static_public, IPV4_PACKET, 0.1)
    switch.pump(0.1)
    assert b.stats.bad_mac2 == 1 and b.stats.cookie_replies_sent == 1
    assert b.stats.responses_sent == 0  # no DH spent on it
    assert a.stats.cookie_replies_received == 1

    # A's retry carries mac2 from the cookie and gets through while B is still loaded.
    switch.run_timers(until=0.7)
    assert b.stats.responses_sent == 1
    assert [e for e in switch.events["A"] if isinstance(e, HandshakeCompleted)]


def test_cookie_is_bound_to_source_address() -> None:
    switch, a, b = connected_pair(timer_scale=10.0, under_load_threshold=0)
    a.send(b.static_public, IPV4_PACKET, 0.0)
    switch.pump(0.0)
    assert a.stats.cookie_replies_received == 1
    # The retry comes from another address: its mac2 does not verify there.
    a.initiate_handshake(b.static_public, 0.6)
    ((retry, _),) = a.datagrams_to_send(0.6)
    before = b.stats.bad_mac2
    assert b.receive_datagram(retry, "elsewhere", 0.6) is None
    assert b.stats.bad_mac2 == before + 1
    assert b.receive_datagram(retry, "A", 0.6) == a.static_public


def test_not_under_load_needs_no_cookie() -> None:
    switch, a, b = connected_pair()
    a.send(b.static_public, IPV4_PACKET, 0.0)
    switch.pump(0.0)
    assert b.stats.cookie_replies_sent == 0
    assert b.stats.handshakes_completed == 1


def test_under_load_each_source_is_rate_limited() -> None:
    """Even with a valid cookie, one source gets 5 at once and then 20 per second."""
    switch, a, b = connected_pair(timer_scale=10.0, under_load_threshold=0)
    a.send(b.static_public, IPV4_PACKET, 0.0)
    switch.pump(0.0)  # initiation -> cookie reply
    assert a.stats.cookie_replies_received == 1
    admitted = 0
    for step in range(20):
        now = 1.0 + step * 0.001  # twenty retries within 20 ms
        a.initiate_handshake(b.static_public, now)
        peer_of(a, b).last_handshake_sent = None  # bypass the sender's own 1-per-REKEY_TIMEOUT
        for data, _ in a.datagrams_to_send(now):
            before = b.stats.handshake_rate_limited
            b.receive_datagram(data, "A", now)
            admitted += b.stats.handshake_rate_limited == before
        b.datagrams_to_send(now)
    assert admitted == 5
    assert b.stats.handshake_rate_limited == 15
