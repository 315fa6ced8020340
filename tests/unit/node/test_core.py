"""NodeCore driven by hand: datagrams in, datagrams out, time passed in, no event loop.

These are the tests the old asyncio `Node` could not have: whole meshes
of real cores (real handshakes, real routing, real records) stepped on one
explicit clock, where a topology is a set of allowed pairs and a crash is a
flag. `CoreNet` (harness.py) is the only driver.
"""

from __future__ import annotations

from gossipmesh.node.core import NodeCore
from gossipmesh.node.events import PeerUp
from gossipmesh.node.paths import PathState
from gossipmesh.node.views import NodeViews
from tests.support.loopback_mesh import echo_request as echo_packet

from .harness import CoreNet, Member

CONVERGE = 120.0
"""Virtual seconds a small mesh gets to find its routes (timers run 10x faster)."""
DELIVERY = 10.0
"""Virtual seconds a packet may take, handshake retries included."""


def run_until_true(net: CoreNet, condition: object, limit: float, step: float = 1.0) -> None:
    """Advance virtual time in steps until `condition()` holds; fail at `limit` seconds."""
    assert callable(condition)
    deadline = net.now + limit
    while not condition():
        assert net.now < deadline, "condition not reached in virtual time"
        net.run_for(step)


def routes_to(core: NodeCore, node_id: bytes) -> bool:
    return any(route.destination == node_id for route in core.routing.routes())


def send_echo(net: CoreNet, source: Member, target: Member, ident: int) -> bytes:
    """Hand one echo request to `source`'s core as its TUN would; wait until `target` has it.

    A first packet to a relayed peer waits for the end-to-end handshake, whose
    first try may leave before the relay's route does: it is retried on a timer.
    """
    packet = echo_packet(source.core.ipv4, target.core.ipv4, ident)
    source.core.tun_packets([packet], net.now)
    net.settle()
    run_until_true(net, lambda: packet in target.delivered, DELIVERY, step=0.1)
    return packet


def delivered_echo(member: Member, packet: bytes) -> bool:
    return member.delivered.count(packet) == 1


def test_two_cores_handshake_and_carry_a_packet() -> None:
    net = CoreNet(2)
    net.start()
    a, b = net.members
    run_until_true(net, lambda: a.core.paths.is_neighbour(b.identity.node_id), CONVERGE)

    assert any(isinstance(e, PeerUp) and e.node_id == b.identity.node_id for e in a.events)
    sent_before = len(net.sent)
    packet = echo_packet(a.core.ipv4, b.core.ipv4, 1)
    a.core.tun_packets([packet], net.now)
    net.settle()
    # an established session: the packet crosses at once, with no timer in between
    assert delivered_echo(b, packet)
    assert len(net.sent) == sent_before + 1
    # it went out encrypted: no datagram on the wire carries the packet's bytes
    assert not any(packet[20:] in datagram for _, _, datagram in net.sent)


def test_a_packet_to_an_unknown_address_is_not_delivered() -> None:
    net = CoreNet(2)
    net.start()
    a, b = net.members
    run_until_true(net, lambda: a.core.paths.is_neighbour(b.identity.node_id), CONVERGE)
    stranger = echo_packet(a.core.ipv4, b.core.ipv4, 2)
    # rewrite the destination to an address nobody holds
    unknown = stranger[:16] + bytes([100, 127, 1, 1]) + stranger[20:]
    a.core.tun_packets([unknown], net.now)
    net.settle()
    net.run_for(DELIVERY)
    assert unknown not in b.delivered
    assert a.core.counters.tun_no_route == 1


def test_three_in_a_line_relay_through_the_middle() -> None:
    net = CoreNet(3, allowed={frozenset((0, 1)), frozenset((1, 2))})
    net.start()
    left, middle, right = net.members
    run_until_true(net, lambda: routes_to(left.core, right.identity.node_id), CONVERGE)

    assert not left.core.paths.is_neighbour(right.identity.node_id)
    views = NodeViews(left.core)
    assert views.describe_path(right.identity.node_id).startswith("relayed")
    packet = send_echo(net, left, right, ident=3)
    assert delivered_echo(right, packet)
    assert packet not in middle.delivered
    # every datagram crossed an allowed pair: the relay really carried it
    assert all(frozenset((s, t)) != frozenset((0, 2)) for s, t, _ in net.sent)


def test_relayed_path_turns_direct_when_the_pair_can_reach_each_other() -> None:
    net = CoreNet(3, allowed={frozenset((0, 1)), frozenset((1, 2))})
    net.start()
    left, _, right = net.members
    right_id = right.identity.node_id
    run_until_true(net, lambda: routes_to(left.core, right_id), CONVERGE)
    assert left.core.paths.path(right_id).state is PathState.RELAYED

    net.allow(0, 2)
    run_until_true(net, lambda: left.core.paths.is_neighbour(right_id), CONVERGE)
    assert left.core.paths.path(right_id).state is PathState.DIRECT
    assert NodeViews(left.core).describe_path(right_id).startswith("direct")
    packet = send_echo(net, left, right, ident=4)
    assert delivered_echo(right, packet)
    assert (0, 2) in {(s, t) for s, t, _ in net.sent}


def test_a_crashed_node_restarts_with_its_saved_address_and_is_reached_again() -> None:
    net = CoreNet(3)
    net.start()
    first, _, third = net.members
    third_id = third.identity.node_id
    run_until_true(net, lambda: first.core.paths.is_neighbour(third_id), CONVERGE)
    address_before = third.core.ipv4
    assert third.saved_address is not None

    net.crash(2)
    run_until_true(net, lambda: not first.core.paths.is_neighbour(third_id), 10 * CONVERGE)
    restarted = net.restart(2)
    assert restarted.ipv4 == address_before
    run_until_true(net, lambda: first.core.paths.is_neighbour(third_id), CONVERGE)
    packet = send_echo(net, first, net.members[2], ident=5)
    assert delivered_echo(net.members[2], packet)


def test_the_core_asks_for_a_timer_and_does_nothing_before_it() -> None:
    net = CoreNet(1)
    net.start()
    core = net.members[0].core
    net.run_for(1.0)
    deadline = core.get_timer()
    assert deadline is not None and deadline > net.now
    core.handle_timer(net.now)  # early: nothing is due, so nothing happens
    assert core.datagrams_to_send() == []
    assert core.get_timer() == deadline
