"""RoutingCore edges: untrusted input, neighbour gating, timers, own-record recovery."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.routing.core import RoutingCore
from gossipmesh.routing.linkstate import LinkStateRecord
from gossipmesh.routing.messages import Ping, Pong, Records, decode_probe
from gossipmesh.wire import PayloadKind

from .harness import START, identity_for

PEER = identity_for(99).node_id


def fresh(seed: int = 1) -> RoutingCore:
    return RoutingCore(identity_for(0, b"core"), random.Random(seed), START)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda kind, tail: bytes((kind, 1)) + tail,
            st.sampled_from([k.value for k in PayloadKind]),
            st.binary(max_size=200),
        ),
    )
)
def test_any_payload_from_a_neighbour_is_handled_without_raising(payload: bytes) -> None:
    core = fresh()
    core.neighbour_up(PEER, START)
    core.receive_control(PEER, payload, START + 0.01)
    core.handle_timer(START + 0.02)
    timer = core.get_timer()
    assert timer is not None and timer > START + 0.02


def test_gossip_and_relay_from_non_neighbours_are_dropped_pings_answered() -> None:
    core = fresh()
    core.messages_to_send()
    summary = core.store.summary().encode()
    core.receive_control(PEER, summary, START)
    assert core.stats.drops["not_neighbour"] == 1
    assert core.messages_to_send() == []
    core.receive_control(PEER, Ping(7, 8).encode(), START)
    [(target, payload)] = core.messages_to_send()
    assert target == PEER and decode_probe(payload) == Pong(7, 8)


def test_a_newer_record_of_our_own_makes_us_jump_above_it() -> None:
    core = fresh()
    core.neighbour_up(PEER, START)
    ours = core.records()[core.own_id]
    older_incarnation = LinkStateRecord.create(
        core.identity,
        sequence=ours.sequence + 1_000_000,
        issued_at_ms=ours.issued_at_ms,
        expires_at_ms=ours.expires_at_ms,
        links=[],
    )
    core.receive_control(PEER, Records((older_incarnation.encode(),)).encode(), START + 1)
    assert core.records()[core.own_id].sequence == older_incarnation.sequence + 1
    # The re-issued record is pushed at once.
    assert any(
        payload[0] == PayloadKind.GOSSIP and target == PEER
        for target, payload in core.messages_to_send()
    )


def test_neighbour_up_probes_and_offers_a_summary_at_once() -> None:
    core = fresh()
    core.messages_to_send()
    core.neighbour_up(PEER, START)
    kinds = sorted(payload[0] for _, payload in core.messages_to_send())
    assert kinds == [PayloadKind.GOSSIP, PayloadKind.PING]


def test_timing_scale_divides_every_timer() -> None:
    core = fresh()
    base = core.timing
    scaled = base.scaled(10)
    assert scaled.ping_interval == base.ping_interval / 10
    assert scaled.record_ttl == base.record_ttl / 10
    assert scaled.damping.half_life == base.damping.half_life / 10
