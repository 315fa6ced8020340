"""Relay envelopes: end-to-end delivery across a line, drops with counted reasons."""

from __future__ import annotations

import itertools
import random

from gossipmesh.routing.core import Direct, RelayDelivered, ViaRelay
from gossipmesh.routing.relay import (
    RELAY_OVERHEAD,
    Deliver,
    Drop,
    DropReason,
    Forward,
    Relay,
    RelayEnvelope,
)

from .harness import Mesh, identity_for

A, B, C, D = (bytes([i]) * 20 for i in range(1, 5))


def line_mesh(count: int, max_hops: int = 8) -> tuple[Mesh, list[bytes]]:
    mesh = Mesh(seed=count, max_hops=max_hops)
    nodes = [mesh.add_node(identity_for(i, b"relay")) for i in range(count)]
    for left, right in itertools.pairwise(nodes):
        mesh.connect(left, right, 0.01)

    def settled() -> bool:
        return mesh.converged() and all(
            len(mesh.cores[node].table.routes) == min(i, max_hops) + min(count - 1 - i, max_hops)
            for i, node in enumerate(nodes)
        )

    mesh.run_until_true(settled, 30)
    return mesh, nodes


def delivered(mesh: Mesh, node: bytes) -> list[RelayDelivered]:
    return [e for e in mesh.events[node] if isinstance(e, RelayDelivered)]


def test_a_message_crosses_a_line_of_relays_end_to_end() -> None:
    mesh, nodes = line_mesh(6)
    source, destination = nodes[0], nodes[-1]
    inner = b"\x04" + b"end-to-end wireguard message" * 40
    plan = mesh.cores[source].plan_send(destination, inner)
    assert isinstance(plan, ViaRelay) and plan.next_hop == nodes[1]
    assert len(plan.payload) == len(inner) + RELAY_OVERHEAD
    mesh.send(source, plan.next_hop, plan.payload)
    mesh.run_until(mesh.now + 1)
    assert delivered(mesh, destination) == [RelayDelivered(source, inner)]
    for relay_node in nodes[1:-1]:
        assert mesh.cores[relay_node].relay.counts["forwarded"] == 1
    # Replies travel the other way the same way.
    back = mesh.cores[destination].plan_send(source, b"reply")
    assert isinstance(back, ViaRelay) and back.next_hop == nodes[-2]
    mesh.send(destination, back.next_hop, back.payload)
    mesh.run_until(mesh.now + 1)
    assert delivered(mesh, source) == [RelayDelivered(destination, b"reply")]


def test_duplicates_are_dropped_once_seen() -> None:
    mesh, nodes = line_mesh(4)
    plan = mesh.cores[nodes[0]].plan_send(nodes[3], b"once")
    assert isinstance(plan, ViaRelay)
    mesh.send(nodes[0], plan.next_hop, plan.payload)
    mesh.send(nodes[0], plan.next_hop, plan.payload)
    mesh.run_until(mesh.now + 1)
    assert len(delivered(mesh, nodes[3])) == 1
    assert mesh.cores[nodes[1]].relay.counts["dropped_duplicate"] == 1
    assert mesh.cores[nodes[1]].stats.drops["relay_duplicate"] == 1


def test_hop_limit_is_respected_and_longer_paths_are_unrouted() -> None:
    mesh, nodes = line_mesh(6, max_hops=3)
    far = mesh.cores[nodes[0]]
    assert far.route(nodes[3]) == nodes[1]
    assert far.route(nodes[4]) is None and far.plan_send(nodes[4], b"x") is None
    # Exactly max_hops links is delivered.
    plan = far.plan_send(nodes[3], b"three hops")
    assert isinstance(plan, ViaRelay)
    mesh.send(nodes[0], plan.next_hop, plan.payload)
    mesh.run_until(mesh.now + 1)
    assert delivered(mesh, nodes[3]) == [RelayDelivered(nodes[0], b"three hops")]
    # An envelope with too small a hop limit dies at the relay where it runs out.
    tight = RelayEnvelope(nodes[0], nodes[3], 1, 99, b"too far").encode()
    mesh.send(nodes[0], nodes[1], tight)
    mesh.run_until(mesh.now + 1)
    assert mesh.cores[nodes[2]].relay.counts["dropped_hop_limit_exceeded"] == 1
    assert len(delivered(mesh, nodes[3])) == 1


def test_an_envelope_sent_back_toward_where_it_came_from_is_a_loop() -> None:
    mesh, nodes = line_mesh(4)
    # nodes[2] hands nodes[1] an envelope for nodes[3]: nodes[1]'s next hop is nodes[2].
    bogus = RelayEnvelope(nodes[0], nodes[3], 5, 1, b"looping").encode()
    mesh.send(nodes[2], nodes[1], bogus)
    mesh.run_until(mesh.now + 1)
    assert mesh.cores[nodes[1]].relay.counts["dropped_loop"] == 1
    assert delivered(mesh, nodes[3]) == []


def test_traffic_moves_to_the_direct_path_and_back() -> None:
    mesh, nodes = line_mesh(3)
    a, c = nodes[0], nodes[2]
    assert isinstance(mesh.cores[a].plan_send(c, b"m"), ViaRelay)
    mesh.connect(a, c, 0.004)
    mesh.run_until(mesh.now + 0.1)
    assert mesh.cores[a].plan_send(c, b"m") == Direct(c, b"m")
    mesh.disconnect(a, c)
    assert isinstance(mesh.cores[a].plan_send(c, b"m"), ViaRelay)


def test_direct_path_dying_silently_falls_back_to_the_relay() -> None:
    mesh, nodes = line_mesh(3)
    a, c = nodes[0], nodes[2]
    mesh.connect(a, c, 0.004)
    mesh.run_until(mesh.now + 3)
    assert isinstance(mesh.cores[a].plan_send(c, b"m"), Direct)
    mesh.disconnect(a, c, tell=False)
    limit = mesh.timing.dead_after + mesh.timing.ping_interval + 1
    took = mesh.run_until_true(
        lambda: isinstance(mesh.cores[a].plan_send(c, b"m"), ViaRelay), limit
    )
    assert took <= limit


def test_decision_order_and_counted_reasons() -> None:
    relay = Relay(B, random.Random(1), max_hops=8, seen_ttl=60.0)
    routes = {D: C, A: A}

    def envelope(source: bytes, destination: bytes, hop_limit: int, ident: int) -> bytes:
        return RelayEnvelope(source, destination, hop_limit, ident, b"inner").encode()

    assert relay.receive(A, envelope(A, B, 0, 1), 0.0, routes.get) == Deliver(A, b"inner")
    forwarded = relay.receive(A, envelope(A, D, 4, 2), 0.0, routes.get)
    assert isinstance(forwarded, Forward) and forwarded.next_hop == C
    assert RelayEnvelope.decode(forwarded.payload).hop_limit == 3
    assert relay.receive(A, envelope(A, D, 4, 2), 0.0, routes.get) == Drop(DropReason.DUPLICATE)
    assert relay.receive(A, envelope(A, D, 0, 3), 0.0, routes.get) == Drop(DropReason.HOP_LIMIT)
    assert relay.receive(A, envelope(A, b"\x09" * 20, 4, 4), 0.0, routes.get) == Drop(
        DropReason.NO_ROUTE
    )
    assert relay.receive(C, envelope(A, D, 4, 5), 0.0, routes.get) == Drop(DropReason.LOOP)
    assert relay.receive(C, envelope(B, D, 4, 6), 0.0, routes.get) == Drop(DropReason.LOOP)
    assert relay.receive(A, b"\x13\x01", 0.0, routes.get) == Drop(DropReason.MALFORMED)
    # After the memory horizon the same id is new again (the hop limit is the second stop).
    assert isinstance(relay.receive(A, envelope(A, D, 4, 2), 61.0, routes.get), Forward)
    assert relay.counts["dropped_loop"] == 2 and relay.counts["delivered"] == 1
