"""Keepalives, RTT measurement and flap damping."""

from __future__ import annotations

import random

from gossipmesh.routing.damping import DampingPolicy, FlapDamper
from gossipmesh.routing.liveness import LinkMonitor
from gossipmesh.routing.messages import Pong
from gossipmesh.routing.timing import RoutingTiming

PEER = b"\x07" * 20
TIMING = RoutingTiming()


def test_rtt_is_measured_against_our_own_send_time() -> None:
    monitor = LinkMonitor(TIMING, random.Random(1))
    monitor.neighbour_up(PEER, 100.0)
    pings, dead = monitor.poll(100.0)
    assert dead == [] and [n for n, _ in pings] == [PEER]
    ping = pings[0][1]
    # A lying echo of the timestamp does not change the measurement.
    assert monitor.on_pong(PEER, Pong(ping.nonce, ping.sent_at_us + 10**9), 100.030)
    assert monitor.measured() == {PEER: 30_000}
    # An unknown nonce is ignored.
    assert not monitor.on_pong(PEER, Pong(ping.nonce ^ 1, 0), 100.040)


def test_silence_declares_dead_and_forgets_until_reported_again() -> None:
    monitor = LinkMonitor(TIMING, random.Random(2))
    monitor.neighbour_up(PEER, 0.0)
    pings, _ = monitor.poll(0.0)
    monitor.on_pong(PEER, Pong(pings[0][1].nonce, 0), 0.01)
    now = 0.01
    dead: list[bytes] = []
    for _ in range(100):
        timer = monitor.next_timer()
        assert timer is not None and timer > now - 1e-9
        now = timer
        _, dead = monitor.poll(now)
        if dead:
            break
    assert dead == [PEER]
    assert now == 0.01 + TIMING.dead_after
    assert not monitor.is_alive(PEER) and monitor.measured() == {}
    # No more probes (they would go through relays); a new neighbour_up starts over.
    assert monitor.next_timer() is None
    assert monitor.poll(now + TIMING.ping_interval) == ([], [])
    monitor.neighbour_up(PEER, now + 1)
    pings, dead = monitor.poll(now + 1)
    assert dead == [] and [n for n, _ in pings] == [PEER]
    assert monitor.on_pong(PEER, Pong(pings[0][1].nonce, 0), now + 1.02)
    assert monitor.is_alive(PEER) and monitor.measured() == {PEER: 20_000}


def test_one_or_two_flaps_are_tolerated_three_suppress_until_decay() -> None:
    policy = DampingPolicy()
    damper = FlapDamper(policy)
    damper.record_flap(PEER, 0.0)
    damper.record_flap(PEER, 1.0)
    assert not damper.is_suppressed(PEER, 1.0)
    damper.record_flap(PEER, 2.0)
    assert damper.is_suppressed(PEER, 2.0)
    reuse = damper.next_reuse_time()
    assert reuse is not None and 2.0 < reuse <= 2.0 + policy.max_suppress
    assert damper.is_suppressed(PEER, reuse - 1.0)
    damper.update(reuse)
    assert not damper.is_suppressed(PEER, reuse)
    assert damper.next_reuse_time() is None


def test_suppression_is_bounded_by_max_suppress() -> None:
    policy = DampingPolicy()
    damper = FlapDamper(policy)
    for i in range(1000):
        damper.record_flap(PEER, i * 0.01)
    reuse = damper.next_reuse_time()
    assert reuse is not None and reuse <= 10.0 + policy.max_suppress + 1e-3
