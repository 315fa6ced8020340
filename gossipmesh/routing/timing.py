"""The routing layer's timers in one place, so tests and the simulator can shrink them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gossipmesh.routing.damping import DampingPolicy


@dataclass(frozen=True)
class RoutingTiming:
    """Every interval in seconds. Defaults suit a real mesh; `scaled` divides them for tests."""

    ping_interval: float = 5.0
    """Keepalive and RTT probe period per neighbour."""
    dead_after: float = 16.0
    """No pong for this long (three missed probes) declares the link dead."""
    ping_jitter: float = 0.1
    """Fraction of the interval drawn at random, so probes do not synchronise."""
    gossip_interval: float = 10.0
    """Anti-entropy round period."""
    gossip_fanout: int = 2
    """Neighbours chosen at random per anti-entropy round."""
    record_ttl: float = 600.0
    """Lifetime of a record; a node that vanishes disappears this long after its last record."""
    record_refresh: float = 200.0
    """An unchanged own record is re-issued this often, well before it expires."""
    min_record_interval: float = 2.0
    """A new link is coalesced with other changes into one record per interval."""
    rtt_record_interval: float = 30.0
    """RTT drift alone is re-advertised at most this often: on a busy host RTTs move by
    more than the change threshold every few seconds, and every record floods the mesh."""
    route_debounce: float = 0.1
    """Graph changes within this window share one route recomputation."""
    max_clock_skew: float = 60.0
    """A record issued up to this far in our future is accepted (clocks differ)."""
    seen_ttl: float = 60.0
    """How long broadcast and relay ids are remembered for duplicate suppression."""
    damping: DampingPolicy = field(default_factory=DampingPolicy)

    def scaled(self, factor: float) -> RoutingTiming:
        """All durations divided by `factor` (config.Settings.timer_scale)."""
        damping = self.damping
        return dataclasses.replace(
            self,
            ping_interval=self.ping_interval / factor,
            dead_after=self.dead_after / factor,
            gossip_interval=self.gossip_interval / factor,
            record_ttl=self.record_ttl / factor,
            record_refresh=self.record_refresh / factor,
            min_record_interval=self.min_record_interval / factor,
            rtt_record_interval=self.rtt_record_interval / factor,
            route_debounce=self.route_debounce / factor,
            max_clock_skew=self.max_clock_skew / factor,
            seen_ttl=self.seen_ttl / factor,
            damping=dataclasses.replace(
                damping,
                half_life=damping.half_life / factor,
                max_suppress=damping.max_suppress / factor,
            ),
        )
