"""`NodeCore`: one mesh member as a sans-IO state machine.

It composes the session manager, the routing core, the directory and the
node's own parts (address map, path selection, record sync, forwarding,
stream links, control dispatch). Input arrives only as calls that carry the
time — `receive_datagram(data, addr, now)`, `tun_packet(s)`, `handle_timer`,
and the commands `start`, `ping`, `publish`, `leave` — plus the results of
requests it made. Output is only pulled: `datagrams_to_send`, the TUN
writes, `get_timer`, `next_event` and `next_request`. It never reads a
clock, sleeps, opens a socket or a file: the daemon's asyncio driver
(`runtime/core_driver.py`) and the simulator's (`simulations/mesh_workload.py`)
do that, and tests drive it with explicit `now` values.

Two clocks: `now` is monotonic (sessions, timers); `now + wall_offset` is
Unix time (records and routing, which other nodes compare).
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Callable, Hashable

from gossipmesh.addressing import ipv6_for
from gossipmesh.directory import Directory
from gossipmesh.identity import Identity
from gossipmesh.links.planner import LinkPlanner
from gossipmesh.membership import NetworkSecret
from gossipmesh.node.address_map import AddressMap
from gossipmesh.node.control import ControlDispatch
from gossipmesh.node.events import (
    DhtDatagram,
    RelayAddress,
    RoutesChanged,
    SaveAddressState,
)
from gossipmesh.node.forwarding import Forwarder
from gossipmesh.node.links import BULK_BATCH, NodeLinks
from gossipmesh.node.options import MESH_MTU, NodeCounters, NodeOptions
from gossipmesh.node.outbox import Outbox, PulledOutput
from gossipmesh.node.own_address import OwnAddress
from gossipmesh.node.paths import PathSelector
from gossipmesh.node.record_sync import RecordSync
from gossipmesh.node.rounds import RoundTimer
from gossipmesh.node.trust import NodeTrust
from gossipmesh.node.trust_gate import TrustGate
from gossipmesh.records import NodeRecord
from gossipmesh.routing import core as routing_events
from gossipmesh.routing.core import RoutingCore
from gossipmesh.routing.timing import RoutingTiming
from gossipmesh.session.events import (
    ControlReceived,
    EndpointChanged,
    HandshakeAbandoned,
    HandshakeCompleted,
    PacketReceived,
)
from gossipmesh.session.manager import SessionManager
from gossipmesh.trust.document import SignedDocument

SERVICE_PASSES = 64
"""Bound on moving output between the cores: each pass only reacts to the last one's."""


class NodeCore(PulledOutput):
    """One mesh member's protocol state; driven by calls, read by pulls."""

    def __init__(
        self,
        identity: Identity,
        secret: NetworkSecret,
        options: NodeOptions,
        *,
        now: float,
        wall_offset: float,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        saved_address: object = None,
    ) -> None:
        self.identity = identity
        self.secret = secret
        self.options = options
        self.wall_offset = wall_offset
        """Unix time minus `now`: the driver's wall clock, fixed for the core's life."""
        self.rng = rng or random.SystemRandom()
        self.started_at = self._now = now
        self.counters = NodeCounters()
        self.outbox = Outbox()
        self.directory = Directory(options.ipv4_network)
        scale = options.timer_scale
        wall = now + wall_offset
        self.sessions = SessionManager.for_identity(
            identity,
            secret,
            timer_scale=scale,
            random_bytes=random_bytes,
            wall_clock_offset=wall_offset,
            mtu=MESH_MTU,
        )
        self.routing = RoutingCore(
            identity,
            self.rng,
            wall,
            max_hops=options.max_hops,
            timing=RoutingTiming().scaled(scale),
        )
        self.own = OwnAddress(identity, options.ipv4_network, options.name, saved_address, wall)
        self.addresses = AddressMap(self.directory, self.sessions, identity.node_id)
        self.paths = PathSelector(
            options,
            self.directory,
            self.addresses,
            self.sessions,
            self.routing,
            self.outbox,
            self.counters,
            self.rng,
            self.send_control,
            wall_offset,
        )
        self.gate = TrustGate(options.authority_public_key, options.certificate)
        self.records = RecordSync(
            identity,
            options,
            self.directory,
            self.own,
            self.routing,
            self.outbox,
            self.counters,
            self.send_control,
            self.gate.admit,
        )
        self.forwarder = Forwarder(
            self.addresses,
            self.sessions,
            self.routing,
            self.paths,
            self.outbox,
            self.counters,
            self._service,
            self.send_control,
        )
        self.links = NodeLinks(
            LinkPlanner(identity.node_id, port=None, random=random_bytes, scale=scale),
            self.addresses,
            self.forwarder,
            self.sessions,
            self.outbox,
            self.counters,
            self._service,
            scale,
        )
        self.forwarder.links = self.links
        self.trust = NodeTrust(
            self.gate,
            self.directory,
            self.sessions,
            self.routing,
            self.paths,
            self.links,
            self.outbox,
            self.counters,
            self.send_control,
            self._directory_changed,
            wall_offset,
            identity.node_id,
            (*(p for leaf in options.leaves for p in leaf.addresses), *options.advertised_routes),
        )
        self.forwarder.filter = self.trust.policy
        self.control = ControlDispatch(
            self.sessions,
            self.routing,
            self.records,
            self.paths,
            self.links,
            self.trust.documents,
            self.outbox,
            self.counters,
            wall_offset,
        )
        self.paths.on_neighbour_up = self._neighbour_up
        self.records.on_change = self._directory_changed
        self._running = self._starting = False
        self._probe_round = RoundTimer(options.probe_interval / scale, self.rng)
        self._directory_round = RoundTimer(options.directory_interval / scale, self.rng)
        self.paths.on_round_done = self._probe_round.finished

        self.ipv6 = ipv6_for(identity.public_key)
        self.addresses.add_own(self.ipv6, self.own.ipv4, options, now)
        self.outbox.request(SaveAddressState(self.own.state()))
        self.directory.update(self.records.own_template(wall).signed(identity))
        self._directory_changed()

    # --- clocks and addresses ------------------------------------------------------------

    @property
    def ipv4(self) -> ipaddress.IPv4Address:
        return self.own.ipv4

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    # --- commands ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Publish our records (the DHT is up); the rounds begin once that is done."""
        self._now = now
        self._starting = True
        self.records.publish(self.wall(now))
        self._service()

    def publish(self, now: float) -> None:
        """Publish our records again (their content changed)."""
        self._now = now
        self.records.publish(self.wall(now))
        self.outbox.dirty = True

    def leave(self, now: float) -> None:
        """Say goodbye: withdraw our links from the topology; the rounds stop."""
        self._now = now
        self._running = self._starting = False
        self._probe_round.stop()
        self._directory_round.stop()
        self.routing.leave(self.wall(now))
        self._service()

    def ping(self, node_id: bytes, nonce: int, now: float) -> None:
        """Send a mesh echo to a node through its session; `EchoAnswered(nonce)` reports it."""
        self._now = now
        entry = self.directory.get(node_id)
        if entry is None:
            raise LookupError("not a known mesh node")
        self.control.send_echo(entry.x25519_public_key, nonce, now)
        self._service()

    def offer_document(self, data: bytes, now: float) -> SignedDocument:
        """A policy or revocation list pushed here (or saved); DocumentError if refused."""
        self._now = now
        try:
            return self.trust.offer(data, now)
        finally:
            self._service()

    def forget_ping(self, nonce: int) -> None:
        """The driver gave up waiting: a late reply is then ignored."""
        self.control.forget_echo(nonce)

    # --- results of requests -------------------------------------------------------------

    def records_published(self, record: NodeRecord | None, now: float) -> None:
        """The DHT service published our records: gossip them; the first time, start the rounds."""
        self._now = now
        self.records.published(record, self.wall(now))
        if self._starting:
            self._starting = False
            self._running = True
            self._probe_round.start(now)
            self._directory_round.start(now)
        self._service()

    def records_fetched(
        self, records: list[NodeRecord], now: float, *, round_finished: bool = False
    ) -> None:
        """Records the DHT found; `round_finished` for the answer to a round's `FetchRecords`."""
        self._now = now
        self.records.fetched(records, self.wall(now))
        if round_finished:
            self._directory_round.finished(now)
        self._service()

    def dht_contacts(
        self, node_ids: list[bytes], reflexive: tuple[str, int] | None, now: float
    ) -> None:
        """What the DHT knows: its contacts' ids, and how it sees our address."""
        self._now = now
        self.records.dht_contacts = set(node_ids)
        extra = [reflexive] if reflexive is not None else []
        self.paths.own_endpoints = {*self.options.host_endpoints, *extra}

    def probe_finished(
        self,
        node_id: bytes,
        endpoint: tuple[str, int] | None,
        answering: bool,
        now: float,
        rtt: float | None = None,
    ) -> None:
        """A ProbeEndpoints answered: the first endpoint to answer, after `rtt` seconds."""
        self._now = now
        self.paths.probe_finished(node_id, endpoint, answering, now, rtt)
        self._service()

    # --- input: the UDP socket ---------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """One datagram from the UDP port (the hot path for transport data)."""
        self._now = now
        if not data:
            self.counters.unknown_datagrams += 1
            return
        kind = data[0]
        if kind == 4:
            opened = self.sessions.open_transport(data, addr, now)
            if opened is None:
                return
            peer, payload = opened
            if payload and (payload[0] >> 4) in (4, 6):
                key = peer.public_key
                rx_bytes = self.forwarder.rx_bytes
                rx_bytes[key] = rx_bytes.get(key, 0) + len(payload)
                self.forwarder.deliver(key, payload, now)
            else:
                self._on_control(peer.public_key, payload, addr)
        elif kind in (1, 2, 3):
            unknown_before = self.sessions.stats.unknown_peer
            self.sessions.receive_datagram(data, addr, now)
            if self.sessions.stats.unknown_peer != unknown_before:
                self._fetch_records_soon(now)
            self._service()
        elif kind == 5:
            self.outbox.request(DhtDatagram(data, addr))
        else:
            self.counters.unknown_datagrams += 1

    def receive_datagrams(self, datagrams: list[bytes], addr: tuple[str, int], now: float) -> None:
        """The datagrams of one GRO read (one source): transport messages opened in one call."""
        for data in datagrams:
            if not data or data[0] != 4:  # a handshake or DHT message among them: one by one
                for each in datagrams:
                    self.receive_datagram(each, addr, now)
                return
        self._now = now
        forwarder = self.forwarder
        rx_bytes = forwarder.rx_bytes
        key = b""
        for peer, payload in self.sessions.open_many(datagrams, addr, now):
            key = peer.public_key
            if payload and (payload[0] >> 4) in (4, 6):
                rx_bytes[key] = rx_bytes.get(key, 0) + len(payload)
                forwarder.deliver(key, payload, now)
            else:
                self._on_control(key, payload, addr)
        if len(datagrams) >= BULK_BATCH and key:
            self.links.bulk_over_udp(key, now)

    # --- input: the TUN device -------------------------------------------------------------

    def tun_packet(self, packet: bytes, now: float) -> None:
        self._now = now
        self.forwarder.tun_packet(packet, now)

    def tun_packets(self, packets: list[bytes], now: float) -> None:
        self._now = now
        self.forwarder.tun_packets(packets, now)

    def tun_frame(self, frame: bytes, now: float) -> bool:
        """A whole TUN frame (virtio header first): True if a stream link took it."""
        self._now = now
        return self.links.tun_frame(frame, now)

    # --- input: time ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` is next due (monotonic), or None."""
        deadlines = [self.sessions.get_timer(), self._probe_round.due, self._directory_round.due]
        routing_due = self.routing.get_timer()
        if routing_due is not None:
            deadlines.append(routing_due - self.wall_offset)
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self._now = now
        wall = self.wall(now)
        self.sessions.handle_timer(now)
        self.routing.handle_timer(wall)
        if self._probe_round.take(now):
            self.paths.probe_round(now)
        if self._directory_round.take(now):
            self.records.directory_round(wall)
            self.trust.round(now)
        self._service()

    # --- inside ------------------------------------------------------------------------------

    def send_control(self, node_id: bytes, payload: bytes) -> None:
        entry = self.directory.get(node_id)
        if entry is not None:
            self.sessions.send(entry.x25519_public_key, payload, self._now)

    def _fetch_records_soon(self, now: float) -> None:
        if self._running and self.records.fetch_soon(now):
            self.records.directory_round(self.wall(now), periodic=False)

    def _on_control(self, peer_key: bytes, payload: bytes, addr: Hashable) -> None:
        node_id = self.addresses.node_by_x25519.get(peer_key)
        if node_id is not None and type(addr) is tuple and not self.paths.is_neighbour(node_id):
            self.paths.direct_control(peer_key, node_id, addr, payload, self.wall(self._now))
        if payload and node_id is not None:
            self.control.dispatch(node_id, peer_key, payload, self._now)
        self._service()

    def _neighbour_up(self, node_id: bytes) -> None:
        self.records.hand_over(node_id)
        self.trust.documents.greet(node_id)

    def _directory_changed(self) -> None:
        """Re-index the data plane, add new session peers, apply the collision rule."""
        now = self._now
        changes = self.directory.take_changes()
        newcomers, departed = self.addresses.rebuild(changes, now)
        self.trust.directory_changed(changes, now)
        for key in departed:
            self.links.forget(key)  # a link of its expires with its keys
        self.records.report_names(changes)
        self.records.check_displacement(self.addresses, self.wall(now))
        if self._running:
            self.paths.probe_newcomers(newcomers)

    def _service(self) -> None:
        """Move output between the cores until none is left; the driver re-reads the timer."""
        now = self._now
        sessions, routing, outbox = self.sessions, self.routing, self.outbox
        for _ in range(SERVICE_PASSES):
            busy = False
            for neighbour, message in routing.messages_to_send():
                busy = True
                self.send_control(neighbour, message)
            for routing_event in routing.events():
                busy = True
                self._on_routing_event(routing_event, now)
            for datagram, addr in sessions.datagrams_to_send(now):
                busy = True
                if type(addr) is tuple:
                    outbox.send(datagram, addr)
                else:
                    self.forwarder.send_relayed(datagram, addr)
            while (event := sessions.next_event()) is not None:
                busy = True
                self._on_session_event(event, now)
            if not busy:
                break
        outbox.dirty = True

    def _on_session_event(self, event: object, now: float) -> None:
        if isinstance(event, PacketReceived):
            self.forwarder.deliver(event.peer, event.packet, now)
        elif isinstance(event, ControlReceived):
            self._on_control(event.peer, event.payload, None)
        elif isinstance(event, HandshakeCompleted | EndpointChanged):
            peer = self.sessions.peer(event.peer)
            if peer is not None and type(peer.endpoint) is tuple:
                self.paths.mark_direct(event.peer, peer.endpoint, self.wall(now))
        elif isinstance(event, HandshakeAbandoned):
            self.paths.handshake_abandoned(event.peer, now)

    def _on_routing_event(self, event: object, now: float) -> None:
        if isinstance(event, routing_events.RelayDelivered):
            self.sessions.receive_datagram(event.inner, RelayAddress(event.source), now)
        elif isinstance(event, routing_events.BroadcastReceived):
            self.records.accept_broadcast(event.body, self.wall(now))
        elif isinstance(event, routing_events.NeighbourDead):
            self.paths.neighbour_dead(event.node_id, now)
        elif isinstance(event, routing_events.RoutesChanged):
            self.outbox.event(RoutesChanged(event.reachable))
