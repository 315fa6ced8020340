"""Which direct peers are routing neighbours: at most `limit`, near ones first, agreed by both.

On an open underlay every node reaches every other directly, and without a
bound every node became every other's neighbour: N sessions kept alive, N
link-state entries per record, every record handed to every neighbour. The
bound keeps the gossip graph sparse (degree <= `limit`), in the spirit of
HyParView's active view: peers with a working direct path beyond the bound
are passive candidates, which refill the active set when a neighbour goes.

Both ends must list a link for routing to use it (routing/table.py), so the
link is negotiated: the node that finds a direct path and wants the peer
sends an OFFER carrying the RTT its probe measured; the peer takes it or
answers PRUNE, and either end may later PRUNE. The rule, the same on both
ends:

- room below `limit`: take it;
- a newcomer with fewer than `MIN_DEGREE` neighbours is taken by evicting
  our best-connected neighbour (it keeps more than `MIN_DEGREE`), so a late
  joiner on a full mesh is not left out;
- a candidate whose RTT is under `NEARER` x that of our slowest "near"
  neighbour replaces it. The `RANDOM_LINKS` slowest neighbours are never
  replaced for RTT: they are the long links that keep the graph's diameter
  small (whatever the probe order gave us);
- otherwise: refuse.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from gossipmesh.wire import PayloadKind

PRUNE_MESSAGE: Final = bytes([PayloadKind.NEIGHBOUR_PRUNE, 1])
"""'I keep no routing link with you' (version 1): the receiver drops its side."""
_OFFER: Final = struct.Struct("!BBI")
"""NEIGHBOUR_OFFER: kind, version 1, the offerer's measured RTT in microseconds."""
UNKNOWN_RTT: Final = 0xFFFFFFFF

MIN_DEGREE: Final = 2
"""A peer with fewer neighbours than this is taken by evicting one of ours."""
RANDOM_LINKS: Final = 2
"""The slowest neighbours, kept as long links: never replaced for a nearer peer."""
NEARER: Final = 0.7
"""A candidate replaces a near neighbour only under this fraction of its RTT."""
PRUNE_REPEAT: Final = 5.0
"""Seconds before a refused peer that still acts as a neighbour is told again."""
REFILL_HOLDOFF: Final = 60.0
"""Seconds a peer that pruned us is not offered the link again (it was full)."""


class MalformedOffer(ValueError):
    pass


def encode_offer(rtt: float | None) -> bytes:
    rtt_us = UNKNOWN_RTT if rtt is None else max(0, min(UNKNOWN_RTT - 1, round(rtt * 1e6)))
    return _OFFER.pack(PayloadKind.NEIGHBOUR_OFFER, 1, rtt_us)


def decode_offer(payload: bytes) -> float | None:
    """The offerer's RTT in seconds (None: it did not measure one)."""
    if len(payload) != _OFFER.size:
        raise MalformedOffer("bad neighbour offer length")
    kind, version, rtt_us = _OFFER.unpack(payload)
    if kind != PayloadKind.NEIGHBOUR_OFFER or version != 1:
        raise MalformedOffer("unknown neighbour offer version")
    return None if rtt_us == UNKNOWN_RTT else rtt_us / 1e6


class Verdict(enum.Enum):
    ACCEPT = "accept"
    EVICT_AND_ACCEPT = "evict"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    evict: bytes | None = None
    """With EVICT_AND_ACCEPT: the neighbour to drop to make room."""


class NeighbourBound:
    """The admission rule and the passive candidates of one node."""

    def __init__(self, limit: int, degree_of: Callable[[bytes], int]) -> None:
        self.limit = max(1, limit)
        self._degree_of = degree_of
        """A node's degree as its newest link-state record says (0 when unknown)."""
        self.passive: dict[bytes, float] = {}
        """Direct peers we refused or pruned, with when we last told them."""
        self.pruned_by: dict[bytes, float] = {}
        """Passive peers that pruned us, with when."""
        self.probe_rtt: dict[bytes, float] = {}
        """Seconds our last answered probe to a peer took (its direct path's RTT)."""
        self.pruned_sent = 0
        self.pruned_received = 0
        self.evictions = 0
        self.idle_expired = 0
        """Passive direct paths dropped after their session went idle."""

    def admit(
        self,
        candidate: bytes,
        neighbours: set[bytes],
        rtt: float | None,
        neighbour_rtts: Mapping[bytes, float],
    ) -> Admission:
        """May `candidate` (direct path, `rtt` seconds if known) be a neighbour?"""
        if len(neighbours) < self.limit:
            return Admission(Verdict.ACCEPT)
        if self._degree_of(candidate) < MIN_DEGREE:
            degrees = ((self._degree_of(node_id), node_id) for node_id in neighbours)
            spare = [(degree, node_id) for degree, node_id in degrees if degree > MIN_DEGREE]
            if spare:
                return Admission(Verdict.EVICT_AND_ACCEPT, max(spare)[1])
        if rtt is not None:
            timed = sorted((neighbour_rtts[n], n) for n in neighbours if n in neighbour_rtts)
            near = timed[: max(0, self.limit - RANDOM_LINKS)]
            if near:
                slowest_rtt, slowest = near[-1]
                if rtt < NEARER * slowest_rtt and self._degree_of(slowest) > MIN_DEGREE:
                    return Admission(Verdict.EVICT_AND_ACCEPT, slowest)
        return Admission(Verdict.REFUSE)

    def would_refuse(self, links: Mapping[bytes, int], rtt: float | None, degree: int) -> bool:
        """Whether a peer whose newest record lists `links` (RTTs in microseconds) would
        refuse our offer, by the rule above applied to what its record says.

        Offering anyway (and taking the link on our side meanwhile) only for
        the PRUNE to come back costs two link-state floods each time: after
        idle passive paths expire (REJECT_AFTER_TIME), every node kept doing
        that once a probe round, with full peers.
        """
        if len(links) < self.limit or degree < MIN_DEGREE:
            return False
        near = sorted(links.values())[: max(0, self.limit - RANDOM_LINKS)]
        return rtt is None or not near or rtt >= NEARER * near[-1] / 1e6

    def should_tell(self, node_id: bytes, now: float) -> bool:
        """Whether to (re)send PRUNE to a passive peer now; records that we did."""
        last = self.passive.get(node_id)
        if last is not None and now - last < PRUNE_REPEAT:
            return False
        self.passive[node_id] = now
        self.pruned_sent += 1
        return True

    def make_passive(self, node_id: bytes, now: float) -> None:
        self.passive.setdefault(node_id, now - PRUNE_REPEAT)

    def was_pruned_by(self, node_id: bytes, now: float) -> None:
        self.pruned_received += 1
        self.make_passive(node_id, now)
        self.pruned_by[node_id] = now

    def may_offer(self, node_id: bytes, now: float) -> bool:
        """Whether a passive peer may be offered the link again (refill)."""
        since = self.pruned_by.get(node_id)
        return since is None or now - since >= REFILL_HOLDOFF

    def activate(self, node_id: bytes) -> None:
        self.passive.pop(node_id, None)
        self.pruned_by.pop(node_id, None)

    def forget(self, node_id: bytes) -> None:
        """The node is gone (dead or left the directory)."""
        self.activate(node_id)
        self.probe_rtt.pop(node_id, None)
