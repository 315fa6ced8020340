"""RoutingCore: liveness, link-state gossip, route table and relay in one sans-IO object.

The node drives it like aioquic's QuicConnection; it never reads a clock,
opens a socket or sleeps, and all randomness comes from the `random.Random`
it is given, so a simulation with a seeded rng is deterministic.

`now` is wall-clock Unix time in seconds (``time.time()`` in the daemon,
virtual time in the simulator): records carry issue and expiry times that
other nodes compare, so it cannot be a monotonic clock. `get_timer()` returns
a time on the same clock.

API::

    core = RoutingCore(identity, rng, now, max_hops=8, timing=RoutingTiming())
    core.neighbour_up(node_id, now)      # a direct session to node_id is established
    core.neighbour_down(node_id, now)    # ... is gone (urgent: pushed at once)
    core.receive_control(node_id, payload, now)  # a decrypted GOSSIP/PING/PONG/RELAY payload
    core.handle_timer(now)               # call when now >= core.get_timer()
    core.get_timer() -> float | None
    core.messages_to_send() -> list[(neighbour node id, payload)]   # drain after every call
    core.events() -> list[RelayDelivered | BroadcastReceived | NeighbourDead | RoutesChanged]
    core.route(destination) -> next hop node id | None   # a dict look-up, never a recomputation
    core.plan_send(destination, wireguard_message) -> Direct | ViaRelay | None
    core.broadcast(body, now)            # opaque bytes to every node, once each
    core.leave(now)                      # announce a graceful departure
    core.routes() -> list[RouteInfo]     # for `gossipmesh routes`
    core.records() -> dict[node id, LinkStateRecord]
    core.stats                           # RoutingStats: messages/bytes in and out by kind, drops

Only sessions over a direct UDP path are neighbours: an end-to-end session
that itself travels through relays must not be reported with neighbour_up.
A neighbour whose keepalives go unanswered for `dead_after` is dropped as if
by neighbour_down and reported as `NeighbourDead`; report it again with
neighbour_up once a direct path to it is confirmed again.

Sequence numbers survive restarts without persisted state: a record's
sequence is max(previous + 1, issued_at in milliseconds), so a restarted
node starts above anything it issued before (as long as its clock did not
step back). If it still meets a record of its own with a higher sequence
(clock stepped back), it re-issues at that sequence + 1 at once.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from gossipmesh.identity import Identity
from gossipmesh.routing.codec import MalformedMessage
from gossipmesh.routing.damping import FlapDamper
from gossipmesh.routing.gossip import (
    Accepted,
    ApplicationBroadcast,
    GossipEngine,
    OwnRecordSeen,
)
from gossipmesh.routing.linkstate import MAX_LINKS, MAX_RTT_US, Link, LinkStateRecord
from gossipmesh.routing.liveness import LinkMonitor
from gossipmesh.routing.messages import GossipType, Ping, Pong, decode_gossip, decode_probe
from gossipmesh.routing.relay import Deliver, Forward, Relay
from gossipmesh.routing.store import RecordStore
from gossipmesh.routing.table import DEFAULT_MAX_HOPS, RouteTable
from gossipmesh.routing.timing import RoutingTiming
from gossipmesh.wire import PayloadKind

MAX_SEQUENCE = 2**64 - 1
RTT_CHANGE_FRACTION = 0.25
RTT_CHANGE_FLOOR_US = 2_000
"""An RTT change is news only beyond 25% and 2 ms: jitter must not re-flood records."""


# --- events and send plans ---------------------------------------------------


@dataclass(frozen=True)
class RelayDelivered:
    """An end-to-end message relayed to us: feed `inner` to the session layer."""

    source: bytes
    inner: bytes


@dataclass(frozen=True)
class BroadcastReceived:
    origin: bytes
    body: bytes


@dataclass(frozen=True)
class NeighbourDead:
    """Keepalives went unanswered: the link is withdrawn and the neighbour dropped.

    As after neighbour_down; call neighbour_up again once a direct path is confirmed.
    """

    node_id: bytes


@dataclass(frozen=True)
class RoutesChanged:
    reachable: int


RoutingEvent = RelayDelivered | BroadcastReceived | NeighbourDead | RoutesChanged


@dataclass(frozen=True)
class Direct:
    """Send the message in the direct session with `node_id`."""

    node_id: bytes
    payload: bytes


@dataclass(frozen=True)
class ViaRelay:
    """Send `payload` (a relay envelope) as a control payload to `next_hop`."""

    next_hop: bytes
    payload: bytes


@dataclass(frozen=True)
class RouteInfo:
    destination: bytes
    next_hop: bytes
    path: tuple[bytes, ...]
    metric_ms: float
    hops: int
    direct: bool


@dataclass
class RoutingStats:
    messages_in: Counter[str] = field(default_factory=Counter)
    bytes_in: Counter[str] = field(default_factory=Counter)
    messages_out: Counter[str] = field(default_factory=Counter)
    bytes_out: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    route_computations: int = 0
    records_issued: int = 0

    def total_bytes_out(self) -> int:
        return sum(self.bytes_out.values())

    def total_bytes_in(self) -> int:
        return sum(self.bytes_in.values())

    def gossip_bytes_out(self) -> int:
        """Bytes of topology upkeep sent: gossip, pings and pongs (not relayed traffic)."""
        return sum(n for kind, n in self.bytes_out.items() if kind != "relay")


_KIND_NAMES = {kind.value: kind.name.lower() for kind in PayloadKind}
_GOSSIP_NAMES = {kind.value: f"gossip.{kind.name.lower()}" for kind in GossipType}


def _kind_name(payload: bytes) -> str:
    """The stats key of a control payload (a dict look-up: it runs for every relayed packet)."""
    if not payload:
        return "empty"
    kind = payload[0]
    if kind == PayloadKind.GOSSIP:
        return (
            _GOSSIP_NAMES.get(payload[2], "gossip.unknown")
            if len(payload) > 2
            else "gossip.unknown"
        )
    return _KIND_NAMES.get(kind, "unknown")


class RoutingCore:
    def __init__(
        self,
        identity: Identity,
        rng: random.Random,
        now: float,
        *,
        max_hops: int = DEFAULT_MAX_HOPS,
        timing: RoutingTiming | None = None,
    ) -> None:
        if not 1 <= max_hops <= 255:
            raise ValueError("max_hops must be between 1 and 255")
        self.identity = identity
        self.own_id = identity.node_id
        self.rng = rng
        self.max_hops = max_hops
        self.timing = timing or RoutingTiming()
        self.stats = RoutingStats()
        self.store = RecordStore(own_origin=identity.node_id)
        self.monitor = LinkMonitor(self.timing, rng)
        self.damper = FlapDamper(self.timing.damping)
        self.gossip = GossipEngine(
            self.own_id, self.store, self.timing, rng, self._send, self._count_drop
        )
        self.relay = Relay(self.own_id, rng, max_hops, self.timing.seen_ttl)
        self.table = RouteTable(self.own_id, {}, max_hops)
        self._outbox: list[tuple[bytes, bytes]] = []
        self._events: list[RoutingEvent] = []
        self._neighbours: set[bytes] = set()
        self._last_sequence = 0
        self._leaving = False
        self._own_record: LinkStateRecord | None = None
        self._record_due: float | None = None
        self._next_refresh = now
        self._next_gossip = now + rng.uniform(0.0, self.timing.gossip_interval)
        self._route_due: float | None = None
        self._timer: float | None = None
        self._issue(now)

    # --- plumbing -----------------------------------------------------------

    def _send(self, neighbour: bytes, payload: bytes) -> None:
        kind = _kind_name(payload)
        self.stats.messages_out[kind] += 1
        self.stats.bytes_out[kind] += len(payload)
        self._outbox.append((neighbour, payload))

    def _count_drop(self, reason: str) -> None:
        self.stats.drops[reason] += 1

    def messages_to_send(self) -> list[tuple[bytes, bytes]]:
        """(neighbour node id, control payload) pairs to send in the sessions, in order."""
        outbox, self._outbox = self._outbox, []
        return outbox

    def events(self) -> list[RoutingEvent]:
        events, self._events = self._events, []
        return events

    # --- own record -----------------------------------------------------------

    def _desired_links(self, now: float) -> dict[bytes, int]:
        measured = [
            (min(rtt, MAX_RTT_US), neighbour)
            for neighbour, rtt in self.monitor.measured().items()
            if neighbour in self._neighbours and not self.damper.is_suppressed(neighbour, now)
        ]
        return {neighbour: rtt for rtt, neighbour in sorted(measured)[:MAX_LINKS]}

    def _issue(self, now: float) -> None:
        """Sign and flood a new own record with the links as they are now."""
        links = [] if self._leaving else [Link(n, r) for n, r in self._desired_links(now).items()]
        issued_ms = round(now * 1000)
        sequence = max(self._last_sequence + 1, issued_ms)
        record = LinkStateRecord.create(
            self.identity,
            sequence=sequence,
            issued_at_ms=issued_ms,
            expires_at_ms=issued_ms + round(self.timing.record_ttl * 1000),
            links=links,
            leaving=self._leaving,
        )
        encoded = record.encode()
        self._last_sequence = sequence
        previous = self._own_record
        self._own_record = record
        self.store.put(record, encoded)
        self.stats.records_issued += 1
        self._record_due = None
        self._next_refresh = now + self.timing.record_refresh
        self.gossip.flood_record(record, encoded, self._neighbours)
        if previous is None or previous.links != record.links:
            self._graph_changed(now)

    def _links_changed(self, now: float) -> None:
        """Compare live links with our record: losses are pushed now, the rest coalesced."""
        if self._own_record is None or self._leaving:
            return
        advertised = self._own_record.neighbours()
        desired = self._desired_links(now)
        if advertised.keys() - desired.keys():
            self._issue(now)
            return
        issued = self._own_record.issued_at_ms / 1000
        if desired.keys() - advertised.keys():
            earliest = issued + self.timing.min_record_interval
        elif self._record_due is None and any(
            abs(rtt - advertised[n]) > max(RTT_CHANGE_FLOOR_US, RTT_CHANGE_FRACTION * advertised[n])
            for n, rtt in desired.items()
        ):
            # Spread over half an interval: nodes that met at once must not re-flood at once.
            earliest = issued + self.timing.rtt_record_interval * self.rng.uniform(1.0, 1.5)
        else:
            return
        due = max(now, earliest)
        if self._record_due is None or due < self._record_due:
            self._record_due = due

    def _graph_changed(self, now: float) -> None:
        if self._route_due is None:
            self._route_due = now + self.timing.route_debounce

    def _recompute_routes(self) -> None:
        table = RouteTable(self.own_id, self.store.graph.snapshot(), self.max_hops)
        self.stats.route_computations += 1
        changed = not table.same_routes(self.table)
        self.table = table
        if changed:
            self._events.append(RoutesChanged(len(table.routes)))

    # --- API: neighbours --------------------------------------------------------

    def neighbour_up(self, node_id: bytes, now: float) -> None:
        """A direct session with `node_id` is established: probe it and sync records."""
        self._timer = None
        if node_id == self.own_id:
            return
        self._neighbours.add(node_id)
        self.monitor.neighbour_up(node_id, now)
        self._poll_monitor(now)
        self.gossip.greet(node_id)

    def neighbour_down(self, node_id: bytes, now: float, *, pruned: bool = False) -> None:
        """The direct session with `node_id` is gone: withdraw the link at once.

        `pruned`: dropped by choice (the neighbour bound), not lost: no flap is counted.
        """
        self._timer = None
        if node_id not in self._neighbours:
            return
        self._neighbours.discard(node_id)
        if self.monitor.neighbour_down(node_id) and not pruned:
            self.damper.record_flap(node_id, now)
        self._links_changed(now)

    def neighbours(self) -> set[bytes]:
        return set(self._neighbours)

    def neighbour_count(self) -> int:
        return len(self._neighbours)

    def advertised_links(self, node_id: bytes) -> Mapping[bytes, int]:
        """Neighbour -> RTT in microseconds, as the newest record of `node_id` lists them."""
        held = self.store.get(node_id)
        return {} if held is None else held.record.neighbours()

    def degree(self, node_id: bytes) -> int:
        """How many links `node_id`'s newest link-state record lists (0 when we hold none)."""
        held = self.store.get(node_id)
        return 0 if held is None else len(held.record.links)

    # --- API: input ---------------------------------------------------------------

    def receive_control(self, from_node_id: bytes, payload: bytes, now: float) -> None:
        """A decrypted control payload that arrived in the session with `from_node_id`."""
        self._timer = None
        kind = _kind_name(payload)
        self.stats.messages_in[kind] += 1
        self.stats.bytes_in[kind] += len(payload)
        first = payload[0] if payload else -1
        if (
            first in (PayloadKind.GOSSIP, PayloadKind.RELAY)
            and from_node_id not in self._neighbours
        ):
            # Only direct sessions carry topology and relay traffic; pings are answered anyway
            # so that the other end's liveness does not depend on the order of neighbour_up calls.
            self._count_drop("not_neighbour")
            return
        try:
            if first == PayloadKind.GOSSIP:
                self._receive_gossip(from_node_id, payload, now)
            elif first in (PayloadKind.PING, PayloadKind.PONG):
                self._receive_probe(from_node_id, payload, now)
            elif first == PayloadKind.RELAY:
                self._receive_relay(from_node_id, payload, now)
            else:
                self._count_drop("unknown_kind")
        except MalformedMessage:
            self._count_drop(f"malformed_{kind}")

    def _receive_gossip(self, sender: bytes, payload: bytes, now: float) -> None:
        message = decode_gossip(payload)
        for outcome in self.gossip.receive(sender, message, self._neighbours, now):
            if isinstance(outcome, Accepted):
                previous = outcome.previous
                record = outcome.record
                if (
                    previous is None
                    or previous.links != record.links
                    or previous.leaving != record.leaving
                ):
                    self._graph_changed(now)
            elif isinstance(outcome, OwnRecordSeen):
                if outcome.sequence >= MAX_SEQUENCE:
                    self._count_drop("own_record_sequence_exhausted")
                    continue
                self._last_sequence = max(self._last_sequence, outcome.sequence)
                self._issue(now)
            elif isinstance(outcome, ApplicationBroadcast):
                self._events.append(BroadcastReceived(outcome.origin, outcome.body))

    def _receive_probe(self, sender: bytes, payload: bytes, now: float) -> None:
        probe = decode_probe(payload)
        if isinstance(probe, Ping):
            self._send(sender, self.monitor.on_ping(probe).encode())
        elif isinstance(probe, Pong) and self.monitor.on_pong(sender, probe, now):
            self._links_changed(now)

    def _receive_relay(self, sender: bytes, payload: bytes, now: float) -> None:
        action = self.relay.receive(sender, payload, now, self._relay_next_hop)
        if isinstance(action, Deliver):
            self._events.append(RelayDelivered(action.source, action.inner))
        elif isinstance(action, Forward):
            self._send(action.next_hop, action.payload)
        else:
            self._count_drop(f"relay_{action.reason.value}")

    # --- API: timers -------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called (cached until the next call that changes it)."""
        if self._timer is None:
            self._timer = self._compute_timer()
        return self._timer

    def _compute_timer(self) -> float:
        candidates = [self._next_gossip, self._next_refresh]
        for extra in (
            self._record_due,
            self._route_due,
            self.monitor.next_timer(),
            self.damper.next_reuse_time(),
        ):
            if extra is not None:
                candidates.append(extra)
        expiry_ms = self.store.next_expiry_ms()
        if expiry_ms is not None:
            candidates.append(expiry_ms / 1000)
        return min(candidates)

    def _poll_monitor(self, now: float) -> None:
        pings, dead = self.monitor.poll(now)
        for neighbour, ping in pings:
            self._send(neighbour, ping.encode())
        for neighbour in dead:
            # As if neighbour_down: the node calls neighbour_up again once it has a direct
            # path again (probing on would go through relays and fake a direct link).
            self._neighbours.discard(neighbour)
            self.damper.record_flap(neighbour, now)
            self._events.append(NeighbourDead(neighbour))
        if dead:
            self._links_changed(now)

    def handle_timer(self, now: float) -> None:
        self._timer = None
        self._poll_monitor(now)
        if self.store.expire(round(now * 1000)):
            self._graph_changed(now)
        reuse = self.damper.next_reuse_time()
        if reuse is not None and reuse <= now:
            self.damper.update(now)
            self._links_changed(now)
        if now >= self._next_refresh or (self._record_due is not None and now >= self._record_due):
            self._issue(now)
        if now >= self._next_gossip:
            self.gossip.anti_entropy_round(self._neighbours)
            jitter = self.rng.uniform(0.9, 1.1)
            self._next_gossip = now + self.timing.gossip_interval * jitter
        if self._route_due is not None and now >= self._route_due:
            self._route_due = None
            self._recompute_routes()

    # --- API: forwarding ---------------------------------------------------------

    def route(self, destination: bytes) -> bytes | None:
        """Next hop toward `destination` from the last computed table."""
        return self.table.next_hop(destination)

    def _relay_next_hop(self, destination: bytes) -> bytes | None:
        if destination in self._neighbours and self.monitor.is_alive(destination):
            return destination
        next_hop = self.table.next_hop(destination)
        if next_hop is None or not self.monitor.is_alive(next_hop):
            return None
        return next_hop

    def plan_send(self, destination: bytes, message: bytes) -> Direct | ViaRelay | None:
        """Where an end-to-end WireGuard message for `destination` goes.

        Direct while a live direct session exists; otherwise wrapped in a relay
        envelope for the next hop. When the direct path comes back, traffic
        returns to it; the end-to-end session is keyed by the peer's static
        key, not by the path, so it carries on unchanged.
        """
        if destination in self._neighbours and self.monitor.is_alive(destination):
            return Direct(destination, message)
        next_hop = self._relay_next_hop(destination)
        if next_hop is None:
            self._count_drop("relay_no_route")
            return None
        payload = self.relay.wrap(destination, message)
        self.stats.messages_out["relay"] += 1
        self.stats.bytes_out["relay"] += len(payload)
        return ViaRelay(next_hop, payload)

    # --- API: broadcast, leave, views ---------------------------------------------

    def broadcast(self, body: bytes, now: float) -> None:
        self._timer = None
        self.gossip.broadcast(body, self._neighbours, now)

    def leave(self, now: float) -> None:
        """Announce a graceful departure: a record with no links, flooded at once."""
        self._timer = None
        self._leaving = True
        self._issue(now)

    def records(self) -> dict[bytes, LinkStateRecord]:
        return {record.origin: record for record in self.store.records()}

    def routes(self) -> list[RouteInfo]:
        infos = []
        for destination, route in sorted(self.table.routes.items()):
            path = self.table.path(destination) or (self.own_id, route.next_hop)
            infos.append(
                RouteInfo(
                    destination,
                    route.next_hop,
                    path,
                    route.metric_ms,
                    route.hops,
                    destination in self._neighbours and self.monitor.is_alive(destination),
                )
            )
        return infos
