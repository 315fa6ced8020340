"""WireGuard's timers on virtual time: retries, giving up, rekey, reject, keepalives."""

from __future__ import annotations

import itertools
import math

from gossipmesh.session.events import HandshakeAbandoned, HandshakeCompleted, PacketReceived
from tests.unit.session.pair import (
    IPV4_PACKET,
    connected_pair,
    established_pair,
    peer_of,
)


def sent_kinds(captured: list[tuple[object, bytes, object]], source: str) -> list[int]:
    return [data[0] for src, data, _ in captured if src == source]


def test_retransmit_with_jitter_then_give_up() -> None:
    switch, a, b = connected_pair()
    switch.drop = True
    a.send(b.static_public, IPV4_PACKET, 0.0)
    times = [0.0]
    now = 0.0
    for _ in range(100):
        when = a.get_timer()
        if when is None or when > 200.0:
            break
        now = when
        sent_before = a.stats.initiations_sent
        a.handle_timer(now)
        switch.pump(now)
        if a.stats.initiations_sent > sent_before:
            times.append(now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(5.0 <= gap <= 5.0 + 1 / 3 + 1e-9 for gap in gaps), gaps
    assert len(set(round(gap, 6) for gap in gaps)) > 1  # jittered
    assert len(times) == 20  # the first and 19 retries, about 90 s + jitter
    assert 90.0 <= times[-1] <= 105.0
    assert [e for e in switch.events["A"] if isinstance(e, HandshakeAbandoned)]
    assert a.stats.handshake_attempts_abandoned == 1
    assert not peer_of(a, b).staged


def test_timer_scale_shortens_retries() -> None:
    switch, a, b = connected_pair(timer_scale=10.0)
    switch.drop = True
    a.send(b.static_public, IPV4_PACKET, 0.0)
    when = a.get_timer()
    assert when is not None and 0.5 <= when <= 0.5 + 1 / 30


def test_initiator_rekeys_after_rekey_after_time() -> None:
    _switch, a, b = established_pair()
    a.send(b.static_public, IPV4_PACKET, 119.0)
    assert sent_kinds([("A", d, x) for d, x in a.datagrams_to_send(119.0)], "A") == [4]
    a.send(b.static_public, IPV4_PACKET, 121.0)
    assert sorted(d[0] for d, _ in a.datagrams_to_send(121.0)) == [1, 4]


def test_responder_does_not_rekey_on_time_but_refuses_after_reject() -> None:
    _switch, a, b = established_pair()
    b.send(a.static_public, IPV4_PACKET, 121.0)
    assert [d[0] for d, _ in b.datagrams_to_send(121.0)] == [4]
    # After REJECT_AFTER_TIME the keypair is not used: stage and handshake.
    b.send(a.static_public, IPV4_PACKET, 180.0)
    assert [d[0] for d, _ in b.datagrams_to_send(180.0)] == [1]
    assert list(peer_of(b, a).staged) == [IPV4_PACKET]


def test_previous_keypair_decrypts_packets_in_flight_during_rekey() -> None:
    switch, a, b = established_pair()
    in_flight = [a.encrypt_for(peer_of(a, b), IPV4_PACKET, 120.5) for _ in range(3)]
    a.send(b.static_public, IPV4_PACKET, 121.0)  # triggers the rekey
    switch.pump(121.0)
    assert a.stats.handshakes_completed == 2 and b.stats.handshakes_completed == 2
    old = peer_of(b, a).previous
    assert old is not None and old is not peer_of(b, a).current
    for datagram in in_flight:
        assert datagram is not None
        assert b.receive_datagram(datagram, "A", 121.5) == a.static_public
    # And the other way: B's packet on the old keypair, sent before it learned of the new one.
    assert b.stats.refusals() == {}


def test_responder_keeps_current_until_next_is_confirmed() -> None:
    _switch, a, b = established_pair()
    a.initiate_handshake(b.static_public, 50.0)
    ((initiation, _),) = a.datagrams_to_send(50.0)
    b.receive_datagram(initiation, "A", 50.0)
    peer = peer_of(b, a)
    assert peer.next is not None and peer.current is not None
    old_current = peer.current
    # B still sends with the confirmed keypair, which A still has.
    b.send(a.static_public, IPV4_PACKET, 50.1)
    sent = b.datagrams_to_send(50.1)
    assert [d[0] for d, _ in sent] == [2, 4]
    assert int.from_bytes(sent[1][0][4:8], "little") == old_current.remote_index


def test_passive_keepalive_after_data_received() -> None:
    switch, _a, b = established_pair()
    assert b.stats.keepalives_sent == 0
    switch.run_timers(until=9.9)
    assert b.stats.keepalives_sent == 0
    switch.run_timers(until=10.1)
    assert b.stats.keepalives_sent == 1


def test_no_keepalive_when_replying_with_data() -> None:
    switch, a, b = established_pair()
    b.send(a.static_public, IPV4_PACKET, 1.0)
    switch.pump(1.0)
    switch.run_timers(until=10.5)
    assert b.stats.keepalives_sent == 0


def test_new_handshake_when_sent_data_gets_no_answer() -> None:
    switch, a, b = established_pair()
    switch.run_timers(until=11.0)  # B's keepalive clears A's wait
    sent = a.stats.initiations_sent
    switch.drop = True
    a.send(b.static_public, IPV4_PACKET, 20.0)
    switch.pump(20.0)
    switch.run_timers(until=34.9)
    assert a.stats.initiations_sent == sent
    switch.run_timers(until=35.4)
    assert a.stats.initiations_sent == sent + 1


def test_keys_zeroed_after_three_reject_times() -> None:
    switch, a, b = established_pair()
    switch.run_timers(until=541.0)
    assert peer_of(a, b).keypairs() == ()
    assert peer_of(b, a).keypairs() == ()
    assert a._index == {} and b._index == {}


def test_persistent_keepalive() -> None:
    switch, a, b = connected_pair()
    a.remove_peer(b.static_public)
    a.add_peer(b.static_public, 0.0, endpoint="B", persistent_keepalive=25)
    when = a.get_timer()
    assert when == 25.0
    switch.run_timers(until=26.0)
    # The first keepalive needed a session: a handshake, then the keepalive itself.
    assert [e for e in switch.events["A"] if isinstance(e, HandshakeCompleted)]
    sent = a.stats.keepalives_sent
    switch.run_timers(until=52.0)
    assert a.stats.keepalives_sent > sent


def test_removed_peer_timers_are_ignored() -> None:
    _switch, a, b = established_pair()
    a.remove_peer(b.static_public)
    assert a.get_timer() is None
    a.handle_timer(math.inf)
    assert a.datagrams_to_send(1000.0) == []


def test_staged_packets_flow_after_handshake() -> None:
    switch, a, b = connected_pair()
    for _ in range(3):
        a.send(b.static_public, IPV4_PACKET, 0.0)
    switch.pump(0.0)
    packets = [e for e in switch.events["B"] if isinstance(e, PacketReceived)]
    assert len(packets) == 3
