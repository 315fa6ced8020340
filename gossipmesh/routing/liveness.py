"""Per-neighbour keepalives and RTT measurement from ping/pong.

Every `ping_interval` (with jitter) a Ping with a fresh random nonce goes to
each neighbour; the RTT is measured against our own send time for that
nonce, so a neighbour cannot make itself look closer than it is by echoing a
false timestamp. The smoothed RTT follows TCP's SRTT (RFC 6298, alpha 1/8).
A link is advertised only once a first pong proves it carries traffic both
ways, and declared dead when no pong arrived for `dead_after`.

A dead neighbour is forgotten, not probed further: once the node stops
using the direct path, a probe would travel through relays and its pong
would revive a "direct" link with a relayed RTT. The node reports the
neighbour again (neighbour_up) when it has confirmed a direct path again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gossipmesh.routing.messages import Ping, Pong
from gossipmesh.routing.timing import RoutingTiming

MAX_OUTSTANDING_PINGS = 4


@dataclass
class NeighbourLiveness:
    node_id: bytes
    up_since: float
    next_ping_at: float
    last_pong_at: float
    srtt_us: int | None = None
    outstanding: dict[int, float] = field(default_factory=dict)


class LinkMonitor:
    """Sans-IO: `poll(now)` returns the pings to send and the neighbours now dead."""

    def __init__(self, timing: RoutingTiming, rng: random.Random) -> None:
        self.timing = timing
        self.rng = rng
        self.neighbours: dict[bytes, NeighbourLiveness] = {}
        self._next: float | None = None
        self._next_known = True
        """`next_timer` is cached: the node asks after every datagram, the answer moves rarely."""

    def neighbour_up(self, node_id: bytes, now: float) -> None:
        """A direct session exists: probe at once (the link counts after the first pong)."""
        self._next_known = False
        state = self.neighbours.get(node_id)
        if state is None:
            self.neighbours[node_id] = NeighbourLiveness(node_id, now, now, now)
        else:
            state.next_ping_at = now
            state.last_pong_at = max(state.last_pong_at, now)

    def neighbour_down(self, node_id: bytes) -> bool:
        """Forget a neighbour; True when its link was measured (so it was advertised)."""
        self._next_known = False
        state = self.neighbours.pop(node_id, None)
        return state is not None and state.srtt_us is not None

    def on_ping(self, ping: Ping) -> Pong:
        return Pong(ping.nonce, ping.sent_at_us)

    def on_pong(self, node_id: bytes, pong: Pong, now: float) -> bool:
        """Account a pong; True when it was the answer to one of our pings."""
        state = self.neighbours.get(node_id)
        if state is None:
            return False
        sent_at = state.outstanding.pop(pong.nonce, None)
        if sent_at is None:
            return False
        sample = max(1, round((now - sent_at) * 1_000_000))
        if state.srtt_us is None:
            state.srtt_us = sample
        else:
            state.srtt_us = round(state.srtt_us + (sample - state.srtt_us) / 8)
        state.last_pong_at = max(state.last_pong_at, now)
        self._next_known = False
        return True

    def poll(self, now: float) -> tuple[list[tuple[bytes, Ping]], list[bytes]]:
        """Pings due now, and neighbours silent for `dead_after` (forgotten here)."""
        pings: list[tuple[bytes, Ping]] = []
        dead: list[bytes] = []
        self._next_known = False
        for node_id, state in list(self.neighbours.items()):
            if now >= state.last_pong_at + self.timing.dead_after:
                dead.append(node_id)
                del self.neighbours[node_id]
                continue
            if state.next_ping_at <= now:
                nonce = self.rng.getrandbits(64)
                state.outstanding[nonce] = now
                while len(state.outstanding) > MAX_OUTSTANDING_PINGS:
                    del state.outstanding[next(iter(state.outstanding))]
                pings.append((node_id, Ping(nonce, round(now * 1_000_000) % 2**64)))
                jitter = self.timing.ping_jitter * self.rng.random()
                state.next_ping_at = now + self.timing.ping_interval * (1.0 - jitter)
        return pings, dead

    def next_timer(self) -> float | None:
        if not self._next_known:
            dead_after = self.timing.dead_after
            times = [
                min(s.next_ping_at, s.last_pong_at + dead_after) for s in self.neighbours.values()
            ]
            self._next = min(times) if times else None
            self._next_known = True
        return self._next

    def is_alive(self, node_id: bytes) -> bool:
        """A direct session exists and keepalives have not declared the path dead."""
        return node_id in self.neighbours

    def measured(self) -> dict[bytes, int]:
        """Neighbour -> smoothed RTT in microseconds, for links proven by a pong."""
        return {n: s.srtt_us for n, s in self.neighbours.items() if s.srtt_us is not None}
