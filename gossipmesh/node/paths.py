"""Path selection: how this node reaches each peer, as an explicit state machine.

States (`PathState`), per peer:

- UNPROBED: known from a record, no direct path tried yet (or tried and lost);
- PROBING: sealed DHT echoes are out to its advertised endpoints
  (a `ProbeEndpoints` request; the driver reports the first to answer);
- RELAYED: no direct path answered; its session runs through the routing
  table's relays (`RelayAddress`) and we asked it to probe us back
  (RENDEZVOUS), since our failed probe opened our NAT toward it;
- DIRECT: a session datagram or handshake arrived over a direct UDP path.
  Up to `max_neighbours` such peers are routing neighbours (`PeerPath.neighbour`,
  agreed by both ends: `node/neighbours.py`); the rest are passive candidates
  whose traffic still takes the direct path.

Transitions: probe round or newcomer -> PROBING; probe answered -> DIRECT
once the handshake (or any datagram) confirms it; probe failed -> RELAYED
(or UNPROBED without a route); neighbour dead or handshake abandoned ->
RELAYED. A peer's rendezvous request starts a probe that does not ask back,
so two nodes that cannot punch (symmetric NATs) do not ping-pong.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from gossipmesh.directory import Directory, Resolved
from gossipmesh.node.address_map import AddressMap
from gossipmesh.node.events import Address, PeerDown, PeerUp, ProbeEndpoints, RelayAddress
from gossipmesh.node.neighbours import (
    PRUNE_MESSAGE,
    Admission,
    NeighbourBound,
    Verdict,
    encode_offer,
)
from gossipmesh.node.options import NodeCounters, NodeOptions
from gossipmesh.node.outbox import Outbox
from gossipmesh.routing.core import RoutingCore
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.timers import REJECT_AFTER_TIME
from gossipmesh.wire import PayloadKind

RENDEZVOUS_REQUEST = bytes([PayloadKind.RENDEZVOUS, 1])
"""'Probe me now': sent through relays after our direct probe failed (version 1)."""
_NEIGHBOUR_TRAFFIC = frozenset((PayloadKind.GOSSIP, PayloadKind.PING))
"""Control a node sends only to its routing neighbours: from a non-neighbour, an implied
offer (a lost OFFER, or a node that predates the neighbour bound)."""


class PathState(enum.Enum):
    UNPROBED = "unprobed"
    PROBING = "probing"
    RELAYED = "relayed"
    DIRECT = "direct"


@dataclass
class PeerPath:
    """How the node currently reaches one peer."""

    state: PathState = PathState.UNPROBED
    direct: Address | None = None
    """The direct UDP endpoint that last answered a probe or a packet."""
    neighbour: bool = False
    """A routing neighbour (DIRECT and admitted under the bound)."""


class PathSelector:
    """Probing, rendezvous, and the direct-or-relayed choice for every peer."""

    def __init__(
        self,
        options: NodeOptions,
        directory: Directory,
        addresses: AddressMap,
        sessions: SessionManager,
        routing: RoutingCore,
        outbox: Outbox,
        counters: NodeCounters,
        rng: random.Random,
        send_control: Callable[[bytes, bytes], None],
        wall_offset: float = 0.0,
    ) -> None:
        self._options = options
        self._send_control = send_control
        """NodeCore.send_control: a control payload into the node's session."""
        self._wall_offset = wall_offset
        self._directory = directory
        self._addresses = addresses
        self._sessions = sessions
        self._routing = routing
        self._outbox = outbox
        self._counters = counters
        self._rng = rng
        self.paths: dict[bytes, PeerPath] = {}
        self._probing: set[bytes] = set()
        self._rendezvous_answered: dict[bytes, float] = {}
        self.own_endpoints: set[Address] = set(options.host_endpoints)
        """Our own addresses (host and reflexive): never probed as a peer's."""
        self.on_neighbour_up: Callable[[bytes], None] = lambda node_id: None
        self.on_round_done: Callable[[float], None] = lambda now: None
        """Called when every probe of a probe round has finished."""
        self._round: set[bytes] = set()
        self.bound = NeighbourBound(options.max_neighbours, routing.degree)

    def path(self, node_id: bytes) -> PeerPath:
        return self.paths.setdefault(node_id, PeerPath())

    def is_neighbour(self, node_id: bytes) -> bool:
        path = self.paths.get(node_id)
        return path is not None and path.neighbour

    # --- probing ---------------------------------------------------------------------

    def probe_round(self, now: float) -> None:
        """Find direct paths to non-neighbours; reach the rest through relays."""
        self._expire_idle_passive(now)
        if self._routing.neighbour_count() < self.bound.limit:
            self._refill(self.bound.limit - self._routing.neighbour_count(), now)
        neighbours = self._routing.neighbours()  # after the refill: it adds some
        own_id = self._routing.own_id
        passive = self.bound.passive
        room = max(0, self.bound.limit - len(neighbours))
        targets = [
            entry
            for entry in self._directory
            if entry.node_id != own_id
            and entry.node_id not in neighbours
            and entry.node_id not in self._probing
            and entry.node_id not in passive
        ]
        self._rng.shuffle(targets)
        # Full: one probe a round keeps finding direct paths (and passive candidates).
        chosen = targets[: max(room, 1 if len(neighbours) >= self.bound.limit else 4)]
        self._round = {entry.node_id for entry in chosen}
        for entry in chosen:
            self.probe(entry)
        if not chosen:
            self.on_round_done(now)

    def probe_newcomers(self, newcomers: list[Resolved]) -> None:
        """Look for a direct path to new nodes at once, while there is room for neighbours."""
        room = self.bound.limit - self._routing.neighbour_count()
        for entry in newcomers[: max(room, 0)]:
            if entry.node_id not in self._probing:
                self.probe(entry)

    def probe(self, entry: Resolved, *, answering: bool = False) -> None:
        self._probing.add(entry.node_id)
        path = self.path(entry.node_id)
        if path.state is PathState.UNPROBED:
            path.state = PathState.PROBING
        self._outbox.request(
            ProbeEndpoints(entry.node_id, tuple(self._candidates(entry)), answering)
        )

    def _candidates(self, entry: Resolved) -> list[Address]:
        """The peer's endpoints worth probing, never one of our own.

        Two sites often use the same private subnet: the peer's host address
        can be ours, and our own echo would answer the probe, making a
        "direct" path to ourselves that never carries a packet.
        """
        endpoints = [(e.host, e.port) for e in entry.record.endpoints if e.port]
        path = self.paths.get(entry.node_id)
        if path is not None and path.direct is not None and path.direct not in endpoints:
            endpoints.insert(0, path.direct)
        return [endpoint for endpoint in endpoints if endpoint not in self.own_endpoints]

    def probe_finished(
        self,
        node_id: bytes,
        endpoint: Address | None,
        answering: bool,
        now: float,
        rtt: float | None = None,
    ) -> None:
        """The driver's report: which candidate answered first (after `rtt` s), or None."""
        self._probing.discard(node_id)
        if endpoint is not None and rtt is not None:
            self.bound.probe_rtt[node_id] = rtt
        if node_id in self._round:
            self._round.discard(node_id)
            if not self._round:
                self.on_round_done(now)
        entry = self._directory.get(node_id)
        if entry is None:
            return
        path = self.path(node_id)
        if path.state is PathState.PROBING:
            path.state = PathState.UNPROBED
        if endpoint is not None:
            self._use_direct(entry, endpoint, now)
            return
        self.use_relay(node_id, now)
        if not answering and self._routing.route(node_id) is not None:
            self._counters.rendezvous_sent += 1
            self._sessions.send(entry.x25519_public_key, RENDEZVOUS_REQUEST, now)

    def on_rendezvous(self, node_id: bytes, now: float) -> None:
        """A peer failed to reach us directly and asks us to probe it back now."""
        entry = self._directory.get(node_id)
        if entry is None or node_id in self._probing or self.is_neighbour(node_id):
            return
        last = self._rendezvous_answered.get(node_id)
        interval = self._options.probe_interval / self._options.timer_scale
        if last is not None and now - last < interval:
            return  # at most one answer per probe interval and peer
        self._rendezvous_answered[node_id] = now
        self._counters.rendezvous_answered += 1
        self.probe(entry, answering=True)

    # --- choosing the path -----------------------------------------------------------------

    def _use_direct(self, entry: Resolved, endpoint: Address, now: float) -> None:
        self.path(entry.node_id).direct = endpoint
        peer = self._sessions.peer(entry.x25519_public_key)
        if peer is None:
            return
        peer.endpoint = endpoint
        self._sessions.initiate_handshake(entry.x25519_public_key, now)

    def use_relay(self, node_id: bytes, now: float) -> None:
        """Point the session at the relays, unless a direct path is in use."""
        path = self.path(node_id)
        if path.neighbour:
            return
        entry = self._directory.get(node_id)
        if entry is None or self._routing.route(node_id) is None:
            return
        if path.state is not PathState.PROBING:
            path.state = PathState.RELAYED
        peer = self._sessions.peer(entry.x25519_public_key)
        if peer is not None and not isinstance(peer.endpoint, RelayAddress):
            peer.endpoint = RelayAddress(node_id)
            if peer.staged:
                self._sessions.initiate_handshake(entry.x25519_public_key, now)

    def mark_direct(
        self, peer_key: bytes, endpoint: Hashable, wall: float, *, consider: bool = True
    ) -> None:
        """A session datagram or handshake came over a direct path.

        `consider`: also decide whether to offer the peer a routing link
        (after a handshake); a plain control message only records the path.
        """
        node_id = self._addresses.node_by_x25519.get(peer_key)
        if node_id is None or not isinstance(endpoint, tuple):
            return
        path = self.path(node_id)
        path.direct = endpoint
        path.state = PathState.DIRECT
        if consider and not path.neighbour:
            self._consider(node_id, wall)

    def direct_control(
        self, peer_key: bytes, node_id: bytes, endpoint: Address, payload: bytes, wall: float
    ) -> None:
        """A control message from a non-neighbour came over a direct path."""
        self.mark_direct(peer_key, endpoint, wall, consider=False)
        if payload and payload[0] in _NEIGHBOUR_TRAFFIC:  # it treats us as its neighbour
            self.on_offer(node_id, None, wall)

    # --- the neighbour bound (node/neighbours.py) ----------------------------------------

    def _admission(self, node_id: bytes, rtt: float | None) -> Admission:
        measured = {n: us / 1e6 for n, us in self._routing.monitor.measured().items()}
        return self.bound.admit(node_id, self._routing.neighbours(), rtt, measured)

    def _consider(self, node_id: bytes, wall: float) -> None:
        """A direct path is up: offer the link if we want the peer; else stay quiet."""
        if not self.bound.may_offer(node_id, wall):
            return
        rtt = self.bound.probe_rtt.get(node_id)
        admission = self._admission(node_id, rtt)
        if admission.verdict is Verdict.REFUSE or self.bound.would_refuse(
            self._routing.advertised_links(node_id), rtt, self._routing.neighbour_count()
        ):
            self.bound.make_passive(node_id, wall)
            return
        self._take(node_id, admission, wall)
        self._send_control(node_id, encode_offer(rtt))

    def on_offer(self, node_id: bytes, rtt: float | None, wall: float) -> None:
        """The peer offers a routing link (or acts as if we had one): take it or PRUNE."""
        path = self.path(node_id)
        if path.neighbour or path.direct is None:
            return
        admission = self._admission(node_id, rtt)
        if admission.verdict is Verdict.REFUSE:
            self.bound.make_passive(node_id, wall)
            if self.bound.should_tell(node_id, wall):
                self._send_control(node_id, PRUNE_MESSAGE)
            return
        self._take(node_id, admission, wall)

    def _take(self, node_id: bytes, admission: Admission, wall: float) -> None:
        if admission.evict is not None:
            self.bound.evictions += 1
            self._prune(admission.evict, wall, tell=True)
        path = self.path(node_id)
        assert path.direct is not None
        path.neighbour = True
        self.bound.activate(node_id)
        self._routing.neighbour_up(node_id, wall)
        self._outbox.event(PeerUp(node_id, path.direct))
        self.on_neighbour_up(node_id)

    def _prune(self, node_id: bytes, wall: float, *, tell: bool) -> None:
        """Drop a neighbour by choice: the direct path stays, the routing link goes."""
        path = self.path(node_id)
        if path.neighbour:
            path.neighbour = False
            self._routing.neighbour_down(node_id, wall, pruned=True)
            self._outbox.event(PeerDown(node_id))
        self.bound.make_passive(node_id, wall)
        if tell and self.bound.should_tell(node_id, wall):
            self._send_control(node_id, PRUNE_MESSAGE)

    def on_prune(self, node_id: bytes, wall: float) -> None:
        """A peer keeps no routing link with us: drop ours, keep it as a candidate."""
        self._prune(node_id, wall, tell=False)
        self.bound.was_pruned_by(node_id, wall)

    def _expire_idle_passive(self, now: float) -> None:
        """Passive direct paths idle past REJECT_AFTER_TIME go back to the relays.

        Nothing keeps a passive path alive (no routing pings), so a NAT mapping
        behind it may be gone: the next packet would wait out the handshake
        retries (90 s) before falling back. Once the session's keys are dead
        anyway, the path is dropped; a later probe round may find it again.
        """
        idle_limit = REJECT_AFTER_TIME / self._options.timer_scale
        for node_id in list(self.bound.passive):
            path = self.paths.get(node_id)
            entry = self._directory.get(node_id)
            if (
                path is None
                or entry is None
                or path.neighbour
                or path.state is not PathState.DIRECT
            ):
                continue
            peer = self._sessions.peer(entry.x25519_public_key)
            handshake = None if peer is None else peer.last_handshake_completed
            if handshake is not None and now - handshake < idle_limit:
                continue
            self.bound.forget(node_id)
            self.bound.idle_expired += 1
            path.state = PathState.UNPROBED
            self.use_relay(node_id, now)

    def _refill(self, room: int, now: float) -> None:
        """Below the bound: offer the link again to passive peers still reached directly."""
        wall = now + self._wall_offset
        candidates = [
            node_id
            for node_id in self.bound.passive
            if (path := self.paths.get(node_id)) is not None
            and path.state is PathState.DIRECT
            and path.direct is not None
            and self._directory.get(node_id) is not None
            and self.bound.may_offer(node_id, wall)
        ]
        self._rng.shuffle(candidates)
        for node_id in candidates[:room]:
            self._consider(node_id, wall)

    def neighbour_dead(self, node_id: bytes, now: float) -> None:
        path = self.paths.get(node_id)
        self.bound.forget(node_id)
        if path is not None and path.neighbour:
            path.state = PathState.UNPROBED
            path.neighbour = False
            self._outbox.event(PeerDown(node_id))
        self.use_relay(node_id, now)

    def forget(self, node_id: bytes) -> None:
        """A node excluded from the mesh (revoked, expired): no path, no candidate."""
        path = self.paths.pop(node_id, None)
        self.bound.forget(node_id)  # a probe in flight still finishes (and ends its round)
        if path is not None and path.neighbour:
            self._outbox.event(PeerDown(node_id))

    def handshake_abandoned(self, peer_key: bytes, now: float) -> None:
        node_id = self._addresses.node_by_x25519.get(peer_key)
        if node_id is not None:
            self.use_relay(node_id, now)

    def live_direct_endpoint(self, node_id: bytes) -> Address | None:
        """The direct endpoint in use for a node, if the path is still live.

        A session keeps its last endpoint after the node leaves or dies: it is
        only a direct path while the node is a live neighbour or routable.
        """
        entry = self._directory.get(node_id)
        peer = None if entry is None else self._sessions.peer(entry.x25519_public_key)
        if peer is None or type(peer.endpoint) is not tuple:
            return None
        if self.is_neighbour(node_id) or self._routing.route(node_id) is not None:
            return peer.endpoint
        return None
