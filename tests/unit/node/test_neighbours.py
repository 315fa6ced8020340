"""The neighbour bound on an open underlay: every node reaches every other directly,
yet none keeps more than `max_neighbours` routing neighbours, both ends agree on
each link, and the sparse graph still routes every pair and carries packets.
"""

from __future__ import annotations

import random

import pytest

from gossipmesh.node.core import NodeCore
from gossipmesh.node.neighbours import (
    MIN_DEGREE,
    PRUNE_REPEAT,
    RANDOM_LINKS,
    REFILL_HOLDOFF,
    Admission,
    MalformedOffer,
    NeighbourBound,
    Verdict,
    decode_offer,
    encode_offer,
)
from tests.support.loopback_mesh import echo_request

from .harness import CoreNet
from .test_core import run_until_true

BOUND = 3
SIZE = 10
CONVERGE = 600.0


def neighbours(core: NodeCore) -> set[bytes]:
    return core.routing.neighbours()


def everyone_routes(net: CoreNet) -> bool:
    ids = {m.identity.node_id for m in net.members}
    return all(
        {route.destination for route in m.core.routing.routes()} >= ids - {m.identity.node_id}
        for m in net.members
    )


def one_sided(net: CoreNet) -> list[tuple[int, int]]:
    """Pairs where one end keeps the other as a neighbour and the other does not."""
    by_id = {m.identity.node_id: m for m in net.members}
    return [
        (member.index, by_id[other].index)
        for member in net.members
        for other in neighbours(member.core)
        if member.identity.node_id not in neighbours(by_id[other].core)
    ]


def test_open_underlay_keeps_degree_within_bound_and_routes_everyone() -> None:
    net = CoreNet(SIZE, max_neighbours=BOUND, seed=11)
    net.start()
    peak = 0

    def settled() -> bool:
        nonlocal peak
        peak = max(peak, *(len(neighbours(m.core)) for m in net.members))
        # A link one end offers and the other refuses lasts until the PRUNE arrives.
        return everyone_routes(net) and not one_sided(net)

    run_until_true(net, settled, CONVERGE)
    net.run_for(60.0)  # keep probing: later rounds must not break the bound either
    peak = max(peak, *(len(neighbours(m.core)) for m in net.members))
    assert peak <= BOUND
    assert everyone_routes(net)
    # Every node reaches every other directly, yet most direct peers are passive.
    assert all(len(m.core.paths.bound.passive) >= SIZE - 1 - BOUND for m in net.members)
    assert sum(m.core.paths.bound.pruned_sent for m in net.members) > 0

    rng = random.Random(3)
    for ident in range(5):
        source, target = rng.sample(net.members, 2)
        packet = echo_request(source.core.ipv4, target.core.ipv4, 100 + ident)
        source.core.tun_packets([packet], net.now)
        net.settle()
        delivered = target.delivered
        run_until_true(net, lambda p=packet, d=delivered: p in d, 10.0, step=0.1)


def test_a_newcomer_on_a_full_mesh_is_taken_by_evicting_a_well_connected_neighbour() -> None:
    degrees = {b"new": 0, b"a": 3, b"b": 5, b"c": 2}
    bound = NeighbourBound(3, lambda node_id: degrees.get(node_id, 0))
    full = {b"a", b"b", b"c"}
    admission = bound.admit(b"new", full, None, {})
    assert admission.verdict is Verdict.EVICT_AND_ACCEPT
    assert admission.evict == b"b"  # the one with the most to spare
    degrees[b"new"] = MIN_DEGREE  # a peer with neighbours of its own is simply refused
    assert bound.admit(b"new", full, None, {}).verdict is Verdict.REFUSE
    assert bound.admit(b"new", {b"a"}, None, {}).verdict is Verdict.ACCEPT


def test_a_much_nearer_candidate_replaces_the_slowest_near_neighbour_not_a_long_link() -> None:
    limit = RANDOM_LINKS + 3
    names = [bytes([i]) for i in range(limit)]
    rtts = {name: 0.010 * (i + 1) for i, name in enumerate(names)}  # 10 ms .. 50 ms
    bound = NeighbourBound(limit, lambda node_id: MIN_DEGREE + 2)
    slowest_near = names[limit - RANDOM_LINKS - 1]  # 30 ms; 40 and 50 ms are the long links
    admission = bound.admit(b"cand", set(names), 0.5 * rtts[slowest_near], rtts)
    assert admission == Admission(Verdict.EVICT_AND_ACCEPT, slowest_near)
    # Not nearer by enough, or RTT unknown: refused.
    assert bound.admit(b"cand", set(names), 0.9 * rtts[slowest_near], rtts).evict is None
    assert bound.admit(b"cand", set(names), None, rtts).verdict is Verdict.REFUSE


def test_no_offer_to_a_peer_whose_record_says_it_would_refuse() -> None:
    """The offerer applies the peer's rule to the peer's advertised links (RTTs in us)."""
    limit = RANDOM_LINKS + 3
    bound = NeighbourBound(limit, lambda node_id: MIN_DEGREE + 2)
    full = {bytes([i]): 10_000 * (i + 1) for i in range(limit)}  # 10 .. 50 ms; near: <= 30 ms
    assert not bound.would_refuse(dict(list(full.items())[:-1]), None, MIN_DEGREE)  # room
    assert bound.would_refuse(full, None, MIN_DEGREE)  # full, no RTT to compete with
    assert bound.would_refuse(full, 0.025, MIN_DEGREE)  # not under 0.7 x 30 ms
    assert not bound.would_refuse(full, 0.015, MIN_DEGREE)  # it would evict for us
    assert not bound.would_refuse(full, None, MIN_DEGREE - 1)  # we are nearly alone: taken


def test_offer_carries_the_rtt_and_rejects_garbage() -> None:
    assert decode_offer(encode_offer(0.0123)) == 0.0123
    assert decode_offer(encode_offer(None)) is None
    with pytest.raises(MalformedOffer):
        decode_offer(encode_offer(0.01)[:-1])
    with pytest.raises(MalformedOffer):
        decode_offer(bytes([0x1E, 9, 0, 0, 0, 0]))


def test_a_prune_is_repeated_at_most_once_per_interval() -> None:
    bound = NeighbourBound(2, lambda node_id: 0)
    assert bound.should_tell(b"p", 100.0)
    assert not bound.should_tell(b"p", 100.0 + PRUNE_REPEAT / 2)
    assert bound.should_tell(b"p", 100.0 + PRUNE_REPEAT)


def test_a_peer_that_pruned_us_is_not_offered_the_link_again_at_once() -> None:
    bound = NeighbourBound(2, lambda node_id: 0)
    bound.was_pruned_by(b"p", 100.0)
    assert b"p" in bound.passive
    assert not bound.may_offer(b"p", 100.0 + REFILL_HOLDOFF / 2)
    assert bound.may_offer(b"p", 100.0 + REFILL_HOLDOFF)


def test_an_idle_passive_path_goes_back_to_the_relays_and_traffic_still_arrives() -> None:
    net = CoreNet(SIZE, max_neighbours=BOUND, seed=11)
    net.start()
    run_until_true(net, lambda: everyone_routes(net) and not one_sided(net), CONVERGE)
    # Sessions rekey every 12 virtual s here (timers 10x): 60 s without traffic kills them.
    net.run_for(60.0)
    assert sum(m.core.paths.bound.idle_expired for m in net.members) > 0
    source = net.members[0]
    expired = [m for m in net.members[1:] if not source.core.paths.is_neighbour(m.identity.node_id)]
    assert expired
    target = expired[0]
    packet = echo_request(source.core.ipv4, target.core.ipv4, 900)
    source.core.tun_packets([packet], net.now)
    net.settle()
    delivered = target.delivered
    run_until_true(net, lambda: packet in delivered, 10.0, step=0.1)
