"""The node: sessions, discovery, routing and the directory composed into one mesh member.

It decides everything and touches nothing: datagrams and TUN packets come in
through method calls, and leave through the `NodeTransport` it was given.
The daemon's runtime gives it a UDP socket and a TUN device; the simulator
gives it a simulated network and a fake TUN; both drive it on an asyncio
loop whose clock it reads (`loop.time()`), never the system's.

Packet paths (DESIGN.md, Data flows):

- TUN -> `tun_packet`: destination address -> session peer (one dict look-up)
  -> `encrypt_for` (one AEAD call) -> one `send_datagram`. A peer reached
  through relays has a `RelayAddress` as its session endpoint: its end-to-end
  WireGuard message is wrapped by the routing core and sent inside the
  session with the next hop.
- UDP -> `datagram_received`: transport data is opened on the fast path;
  its IP packet is checked (the source must be the sending peer's address,
  the destination ours) and written to the TUN. Handshakes, control payloads
  and DHT datagrams take the slow path.

Who is a neighbour: a peer whose session runs over a direct UDP path. Each
probe round the node checks candidates' advertised endpoints with an
authenticated DHT echo; a peer that answers gets its session endpoint set to
that address, one that does not is reached through the routing table.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gossipmesh import icmp
from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, first_ipv4, ipv4_for, ipv6_for
from gossipmesh.directory import (
    ROUTED_PREFIXES_EXTENSION,
    Directory,
    Resolved,
    encode_prefixes,
)
from gossipmesh.discovery.service import Discovery
from gossipmesh.identity import Identity
from gossipmesh.leaves import LeafPeer
from gossipmesh.links.planner import LinkPlanner
from gossipmesh.membership import NetworkSecret
from gossipmesh.names import key_name
from gossipmesh.node_links import BULK_BATCH, NodeLinks
from gossipmesh.node_messages import (
    MalformedNodeMessage,
    decode_echo,
    decode_record_request,
    decode_records,
    encode_echo,
    encode_record_request,
    encode_records,
)
from gossipmesh.records import (
    Endpoint,
    EndpointKind,
    NameRecord,
    NodeRecord,
    RecordError,
    decode_record,
    validate,
)
from gossipmesh.routing.core import (
    BroadcastReceived,
    Direct,
    NeighbourDead,
    RelayDelivered,
    RoutingCore,
    ViaRelay,
)
from gossipmesh.routing.relay import RELAY_OVERHEAD
from gossipmesh.routing.timing import RoutingTiming
from gossipmesh.runtime.statefiles import StateError, read_json, write_json
from gossipmesh.session.events import (
    ControlReceived,
    EndpointChanged,
    HandshakeAbandoned,
    HandshakeCompleted,
    PacketReceived,
)
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.peer import Peer
from gossipmesh.wire import PayloadKind

log = logging.getLogger(__name__)

WIREGUARD_OVERHEAD = 32
"""16-byte transport header plus 16-byte Poly1305 tag."""
UNDERLAY_MTU = 1500
IPV6_UDP_HEADERS = 48


def _mesh_mtu() -> int:
    """The largest TUN MTU whose relayed packets still fit a 1,500-byte underlay.

    A relayed packet is wrapped twice: the end-to-end WireGuard message (32
    bytes, payload padded to 16), the relay envelope (RELAY_OVERHEAD), the
    hop-by-hop WireGuard message (32; not padded beyond the MTU), and
    IPv6+UDP headers (48; IPv4's 28 leave more room). Rounded down to 16 so a
    full-size packet needs no end-to-end padding. With a 51-byte envelope this
    is 1,328.
    """
    room = UNDERLAY_MTU - IPV6_UDP_HEADERS - WIREGUARD_OVERHEAD - RELAY_OVERHEAD
    return (room - WIREGUARD_OVERHEAD) // 16 * 16


MESH_MTU = _mesh_mtu()
_LINK_KINDS = (PayloadKind.LINK_OFFER, PayloadKind.LINK_ACCEPT, PayloadKind.LINK_DECLINE)
NODE_RECORD_BROADCAST = b"\x01"
RENDEZVOUS_REQUEST = bytes([PayloadKind.RENDEZVOUS, 1])
"""'Probe me now': sent through relays after our direct probe failed (version 1)."""
"""Prefix of a broadcast body that carries a signed node record."""


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """A session endpoint meaning "through the routing table's relays to this node"."""

    node_id: bytes


class NodeTransport(Protocol):
    """What the node needs from the world: send a datagram, deliver a packet locally."""

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None: ...

    def write_tun(self, packet: bytes) -> None: ...


@dataclass(frozen=True)
class NodeOptions:
    """Everything about a node that is not its key or its network secret."""

    name: str | None = None
    ipv4_network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK
    listen_port: int = 51821
    host_endpoints: tuple[tuple[str, int], ...] = ()
    """Addresses of this host's interfaces where peers may reach it."""
    bootstrap: tuple[tuple[str, int], ...] = ()
    timer_scale: float = 1.0
    max_hops: int = 8
    max_neighbours: int = 16
    probe_interval: float = 10.0
    """Seconds between rounds that look for direct paths to non-neighbours."""
    directory_interval: float = 5.0
    """Seconds between rounds that fetch records the node lacks."""
    record_lifetime: int = 1800
    rpc_timeout: float = 2.0
    leaves: tuple[LeafPeer, ...] = ()
    service_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    """Extra local addresses (the MagicDNS resolver) that leaves may reach on this host."""


@dataclass
class NodeCounters:
    """Data-plane and node-level counters, shown by `gossipmesh status`."""

    tun_packets: int = 0
    tun_no_route: int = 0
    tun_relayed: int = 0
    delivered: int = 0
    source_rejected: int = 0
    destination_rejected: int = 0
    unknown_datagrams: int = 0
    send_errors: int = 0
    records_refused: int = 0
    icmp_sent: int = 0
    control_malformed: int = 0
    rendezvous_sent: int = 0
    rendezvous_answered: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class PeerPath:
    """How the node currently reaches one peer."""

    direct: tuple[str, int] | None = None
    """The direct UDP endpoint that last answered a probe or a packet."""
    neighbour: bool = False


class Node:
    """One mesh member. Construct, `await start()`, feed it, `await stop()`."""

    def __init__(
        self,
        identity: Identity,
        secret: NetworkSecret,
        options: NodeOptions,
        transport: NodeTransport,
        *,
        state_dir: Path | None = None,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_clock_offset: float | None = None,
    ) -> None:
        self.identity = identity
        self.secret = secret
        self.options = options
        self.transport = transport
        self.state_dir = state_dir
        self.rng = rng or random.SystemRandom()
        self._random_bytes = random_bytes
        self._wall_clock_offset = wall_clock_offset
        self.counters = NodeCounters()
        self.directory = Directory(options.ipv4_network)
        self.paths: dict[bytes, PeerPath] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0
        self._started_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._peer_by_address: dict[bytes, Peer] = {}
        self._node_by_x25519: dict[bytes, bytes] = {}
        self._local_addresses: set[bytes] = set()
        self._leaf_by_x25519: dict[bytes, LeafPeer] = {}
        self._leaf_peer_by_address: dict[bytes, Peer] = {}
        self._echo_waiters: dict[int, asyncio.Future[float]] = {}
        self.links = NodeLinks(
            self,
            LinkPlanner(
                identity.node_id, port=None, random=random_bytes, scale=options.timer_scale
            ),
        )
        """Stream links to other nodes; off until the runtime enables them."""
        self.tx_bytes: dict[bytes, int] = {}
        """Bytes of IP packets sent to each peer (by X25519 key), for `peers`."""
        self.rx_bytes: dict[bytes, int] = {}
        self._probing: set[bytes] = set()
        self._rendezvous_answered: dict[bytes, float] = {}
        self._last_urgent_fetch = float("-inf")
        self._ipv4_counter = 0
        self._ipv4_held_since = 0
        self._name_claimed_since = 0
        self.ipv4: ipaddress.IPv4Address | None = None
        self.ipv6 = ipv6_for(identity.public_key)
        self._local_addresses.add(self.ipv6.packed)
        self._local_addresses.update(address.packed for address in options.service_addresses)
        # Built in start(), once the loop is known.
        self.sessions: SessionManager
        self.routing: RoutingCore
        self.discovery: Discovery

    # --- clocks ----------------------------------------------------------------

    def now(self) -> float:
        """The session clock: the loop's monotonic time."""
        assert self._loop is not None
        return self._loop.time()

    def wall(self) -> float:
        """Unix seconds on the loop's clock, for records that other nodes compare."""
        assert self._loop is not None
        return self._loop.time() + self._wall_offset

    # --- life cycle ------------------------------------------------------------

    def prepare(self) -> None:
        """Build the cores and claim addresses (no traffic yet), inside the running loop.

        The runtime calls this first to learn the addresses for its TUN device;
        `start()` calls it if the runtime did not.
        """
        if self._loop is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        offset = self._wall_clock_offset
        self._wall_offset = time.time() - loop.time() if offset is None else offset
        self._started_at = loop.time()
        scale = self.options.timer_scale
        self.sessions = SessionManager.for_identity(
            self.identity,
            self.secret,
            timer_scale=scale,
            random_bytes=self._random_bytes,
            wall_clock_offset=self._wall_offset,
            mtu=MESH_MTU,
        )
        self.routing = RoutingCore(
            self.identity,
            self.rng,
            self.wall(),
            max_hops=self.options.max_hops,
            timing=RoutingTiming().scaled(scale),
        )
        self.discovery = Discovery(
            self.identity,
            self.secret,
            self.transport.send_datagram,
            self.state_dir,
            record_lifetime=self.options.record_lifetime,
            rpc_timeout=self.options.rpc_timeout,
            wall_clock=self.wall,
        )
        self._load_address_state()
        for leaf in self.options.leaves:
            self._add_leaf(leaf)
        self.directory.update(self._own_template().signed(self.identity))
        self._directory_changed()

    async def start(self) -> None:
        """Join the DHT, publish our records, and begin looking for peers."""
        self.prepare()
        loop = asyncio.get_running_loop()
        scale = self.options.timer_scale
        await self.discovery.start(self.options.bootstrap)
        await self._publish()
        self._tasks = [
            loop.create_task(self._every(self.options.probe_interval / scale, self._probe_round)),
            loop.create_task(
                self._every(self.options.directory_interval / scale, self._directory_round)
            ),
        ]
        self._service()

    async def stop(self) -> None:
        """Leave gracefully: tell neighbours, stop timers, save the peer cache."""
        if self._stopping:
            return
        self._stopping = True
        tasks = [*self._tasks, *self._jobs]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self.routing.leave(self.wall())
                self._service()
            await self.discovery.stop()
        if self._timer is not None:
            self._timer.cancel()
        for waiter in self._echo_waiters.values():
            waiter.cancel()

    async def _every(self, interval: float, job: Callable[[], Any]) -> None:
        """Run `job` now and then every `interval` seconds until stopped; log, never die."""
        while not self._stopping:
            try:
                await job()
            except Exception:
                log.exception("periodic %s failed; retrying", getattr(job, "__name__", job))
            await asyncio.sleep(interval * loop_jitter(self.rng))

    # --- own address and records ---------------------------------------------------

    def _load_address_state(self) -> None:
        """Keep the IPv4 counter and claim times across restarts (address.json)."""
        network = self.options.ipv4_network
        saved: Any = None
        if self.state_dir is not None:
            try:
                saved = read_json(self.state_dir / "address.json")
            except StateError as exc:
                log.warning("%s; claiming the address afresh", exc)
        now = int(self.wall())
        if (
            isinstance(saved, dict)
            and saved.get("public_key") == self.identity.public_key.hex()
            and saved.get("network") == str(network)
            and isinstance(saved.get("counter"), int)
            and ipv4_for(self.identity.public_key, saved["counter"], network) is not None
        ):
            self._ipv4_counter = saved["counter"]
            self._ipv4_held_since = int(saved.get("held_since", now))
            if saved.get("name") == (self.options.name or ""):
                self._name_claimed_since = int(saved.get("name_claimed_since", now))
            else:
                self._name_claimed_since = now
        else:
            self._ipv4_counter, _ = first_ipv4(self.identity.public_key, network)
            self._ipv4_held_since = now
            self._name_claimed_since = now
        self._set_ipv4()
        self._save_address_state()

    def _set_ipv4(self) -> None:
        if self.ipv4 is not None:
            self._local_addresses.discard(self.ipv4.packed)
        address = ipv4_for(self.identity.public_key, self._ipv4_counter, self.options.ipv4_network)
        assert address is not None
        self.ipv4 = address
        self._local_addresses.add(address.packed)

    def _save_address_state(self) -> None:
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_json(
                self.state_dir / "address.json",
                {
                    "public_key": self.identity.public_key.hex(),
                    "network": str(self.options.ipv4_network),
                    "counter": self._ipv4_counter,
                    "held_since": self._ipv4_held_since,
                    "name": self.options.name or "",
                    "name_claimed_since": self._name_claimed_since,
                },
            )
        except (OSError, StateError) as exc:
            log.warning("address state not saved (it will be claimed afresh): %s", exc)

    def _own_template(self) -> NodeRecord:
        wall = int(self.wall())
        endpoints = tuple(
            Endpoint(EndpointKind.HOST, host, port) for host, port in self.options.host_endpoints
        )
        prefixes = [prefix for leaf in self.options.leaves for prefix in leaf.addresses]
        extensions = ((ROUTED_PREFIXES_EXTENSION, encode_prefixes(prefixes)),) if prefixes else ()
        name = self.options.name or ""
        return NodeRecord(
            public_key=self.identity.public_key,
            sequence=max(1, int(self.wall() * 1000)),
            issued_at=wall,
            expires_at=wall + self.options.record_lifetime,
            ipv4_counter=self._ipv4_counter,
            ipv4_held_since=self._ipv4_held_since,
            name=name,
            name_claimed_since=self._name_claimed_since if name else 0,
            endpoints=endpoints,
            extensions=extensions,
        )

    async def _publish(self) -> None:
        template = self._own_template()
        name_record = None
        if template.name:
            name_record = NameRecord(
                name=template.name,
                public_key=template.public_key,
                claimed_since=template.name_claimed_since,
                sequence=template.sequence,
                issued_at=template.issued_at,
                expires_at=template.expires_at,
            )
        result = await self.discovery.publish(template, name_record)
        if not result.ok:
            log.info("DHT publication reached no peer yet; it is retried on every republish")
        record = self.discovery.current_node_record()
        if record is not None:
            self.directory.update(record)
            self._directory_changed()
            self.routing.broadcast(NODE_RECORD_BROADCAST + record.encode(), self.wall())
            self._service()

    def _check_displacement(self) -> None:
        """Move to a new IPv4 when the collision rule displaced us (docs/addressing.md)."""
        outcome = self.directory.ipv4_outcome(self.identity.node_id)
        if outcome is None or not outcome.displaced or self._loop is None:
            return
        log.warning("IPv4 %s is held by an earlier node; moving to %s", self.ipv4, outcome.address)
        self._ipv4_counter = outcome.counter
        self._ipv4_held_since = int(self.wall())
        self._set_ipv4()
        self._save_address_state()
        self._spawn(self._publish())

    # --- the directory --------------------------------------------------------------

    def accept_record(self, data: bytes) -> NodeRecord | None:
        """Verify an encoded node record from a peer; add it if it is news."""
        try:
            record = decode_record(data)
            held = self.directory.record(record.node_id) if isinstance(record, NodeRecord) else None
            validated = validate(record, self.wall(), held)
        except RecordError:
            self.counters.records_refused += 1
            return None
        if not isinstance(validated, NodeRecord) or validated.node_id == self.identity.node_id:
            return None
        if self.directory.update(validated):
            self._directory_changed()
        return validated

    def _directory_changed(self) -> None:
        """Rebuild the data plane's look-ups and add new session peers."""
        if self._loop is None:
            return
        now = self.now()
        own_id = self.identity.node_id
        peer_by_address: dict[bytes, Peer] = {}
        node_by_x25519: dict[bytes, bytes] = {}
        newcomers = []
        for entry in self.directory:
            if entry.node_id == own_id:
                continue
            peer = self.sessions.add_peer(entry.x25519_public_key, now)
            if entry.node_id not in self.paths:
                self.paths[entry.node_id] = PeerPath()
                newcomers.append(entry)
            node_by_x25519[entry.x25519_public_key] = entry.node_id
            if entry.ipv4 is not None:
                peer_by_address[entry.ipv4.packed] = peer
            peer_by_address[entry.ipv6.packed] = peer
        peer_by_address.update(self._leaf_peer_by_address)
        for departed in self._node_by_x25519.keys() - node_by_x25519.keys():
            self.links.planner.forget(departed)  # a link of its expires with its keys
        self._peer_by_address = peer_by_address
        self._node_by_x25519 = node_by_x25519
        self._check_displacement()
        if self._tasks:  # started: look for a direct path to a newcomer at once
            room = self.options.max_neighbours - len(self.routing.neighbours())
            for entry in newcomers[: max(room, 0)]:
                self._spawn(self._probe(entry))

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run a one-off job; it is cancelled at stop and its failure is logged."""
        assert self._loop is not None
        task = self._loop.create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node job failed", exc_info=task.exception())

    def _fetch_records_soon(self) -> None:
        """A handshake came from a key we hold no record for: fetch records now.

        Without this the newcomer's handshake is refused until our next
        directory round (5 s) and its retry (another 5 s); once its record is
        here, the newcomer probe answers it with a handshake of our own.
        """
        now = self.now()
        if self._loop is None or now - self._last_urgent_fetch < 1.0 or not self._tasks:
            return
        self._last_urgent_fetch = now
        self._spawn(self._directory_round())

    async def _directory_round(self) -> None:
        """Fetch records of nodes we know of but hold no record for; drop expired ones."""
        wall = self.wall()
        for entry in list(self.directory):
            if entry.node_id != self.identity.node_id and entry.record.expires_at < wall:
                self.directory.remove(entry.node_id)
                self._directory_changed()
        known = {entry.node_id for entry in self.directory}
        wanted = set(self.routing.records()) | {p.node_id for p in self.discovery.known_peers()}
        missing = sorted(wanted - known)
        if not missing:
            return
        neighbours = sorted(self.routing.neighbours())
        if neighbours:
            # Every neighbour, not one at random: a record then spreads at least
            # one hop per round, even where the DHT cannot reach its holders.
            request = encode_record_request(missing)
            for neighbour in neighbours:
                self._send_control(neighbour, request)
            self._service()
        lookups = [self.discovery.lookup_node(node_id) for node_id in missing[:16]]
        for record in await asyncio.gather(*lookups):
            if record is not None and self.directory.update(record):
                self._directory_changed()

    # --- direct paths -------------------------------------------------------------

    def _candidates(self, entry: Resolved) -> list[tuple[str, int]]:
        """The peer's endpoints worth probing, never one of our own.

        Two sites often use the same private subnet: the peer's host address
        can be ours, and our own echo would answer the probe, making a
        "direct" path to ourselves that never carries a packet.
        """
        own = set(self.options.host_endpoints)
        reflexive = self.discovery.reflexive_endpoint()
        if reflexive is not None:
            own.add((reflexive.host, reflexive.port))
        endpoints = [(e.host, e.port) for e in entry.record.endpoints if e.port]
        path = self.paths.get(entry.node_id)
        if path is not None and path.direct is not None and path.direct not in endpoints:
            endpoints.insert(0, path.direct)
        return [endpoint for endpoint in endpoints if endpoint not in own]

    async def _probe_round(self) -> None:
        """Find direct paths to non-neighbours; reach the rest through relays."""
        neighbours = self.routing.neighbours()
        own_id = self.identity.node_id
        targets = [
            entry
            for entry in self.directory
            if entry.node_id != own_id
            and entry.node_id not in neighbours
            and entry.node_id not in self._probing
        ]
        self.rng.shuffle(targets)
        room = max(0, self.options.max_neighbours - len(neighbours))
        await asyncio.gather(*(self._probe(entry) for entry in targets[: max(room, 4)]))
        self._service()

    async def _probe(self, entry: Resolved, *, answering: bool = False) -> None:
        """Try the peer's advertised endpoints; on failure use relays and ask for rendezvous.

        A failed probe still opened our NAT's mapping toward the peer's
        endpoint, so the peer's own probe, sent now, can pass it: we ask for
        that probe through the relayed session (RENDEZVOUS). A probe made in
        answer to a rendezvous does not ask back, so two nodes that cannot
        punch (symmetric NATs) do not ping-pong.
        """
        self._probing.add(entry.node_id)
        try:
            endpoint = await self._first_answer(self._candidates(entry))
            if endpoint is not None:
                self._use_direct(entry, endpoint)
                return
            self._use_relay(entry.node_id)
            if not answering and self.routing.route(entry.node_id) is not None:
                self.counters.rendezvous_sent += 1
                self.sessions.send(entry.x25519_public_key, RENDEZVOUS_REQUEST, self.now())
                self._service()
        finally:
            self._probing.discard(entry.node_id)

    async def _first_answer(self, candidates: list[tuple[str, int]]) -> tuple[str, int] | None:
        """Probe every candidate at once; the first to answer wins.

        One after another, each unreachable candidate (a private host address
        seen from outside its LAN) cost a whole echo timeout before the next
        was tried, while a punched NAT mapping waits for our packet.
        """

        async def answers(endpoint: tuple[str, int]) -> tuple[str, int] | None:
            return endpoint if await self.discovery.probe(endpoint) else None

        probes = [asyncio.ensure_future(answers(endpoint)) for endpoint in candidates]
        try:
            for finished in asyncio.as_completed(probes):
                endpoint = await finished
                if endpoint is not None:
                    return endpoint
            return None
        finally:
            for probe in probes:
                probe.cancel()

    def _on_rendezvous(self, node_id: bytes) -> None:
        """A peer failed to reach us directly and asks us to probe it back now."""
        entry = self.directory.get(node_id)
        path = self.paths.get(node_id)
        if entry is None or node_id in self._probing or (path is not None and path.neighbour):
            return
        now = self.now()
        last = self._rendezvous_answered.get(node_id)
        if last is not None and now - last < self.options.probe_interval / self.options.timer_scale:
            return  # at most one answer per probe interval and peer
        self._rendezvous_answered[node_id] = now
        self.counters.rendezvous_answered += 1
        self._spawn(self._probe(entry, answering=True))

    def _use_direct(self, entry: Resolved, endpoint: tuple[str, int]) -> None:
        path = self.paths.setdefault(entry.node_id, PeerPath())
        path.direct = endpoint
        peer = self.sessions.peer(entry.x25519_public_key)
        if peer is None:
            return
        peer.endpoint = endpoint
        self.sessions.initiate_handshake(entry.x25519_public_key, self.now())
        self._service()

    def _use_relay(self, node_id: bytes) -> None:
        """Point the session at the relays, unless a direct path is in use."""
        path = self.paths.setdefault(node_id, PeerPath())
        if path.neighbour:
            return
        entry = self.directory.get(node_id)
        if entry is None or self.routing.route(node_id) is None:
            return
        peer = self.sessions.peer(entry.x25519_public_key)
        if peer is not None and not isinstance(peer.endpoint, RelayAddress):
            peer.endpoint = RelayAddress(node_id)
            if peer.staged:
                self.sessions.initiate_handshake(entry.x25519_public_key, self.now())

    def _mark_direct(self, peer_key: bytes, endpoint: Hashable) -> None:
        node_id = self._node_by_x25519.get(peer_key)
        if node_id is None or not isinstance(endpoint, tuple):
            return
        path = self.paths.setdefault(node_id, PeerPath())
        path.direct = endpoint
        if not path.neighbour:
            path.neighbour = True
            self.routing.neighbour_up(node_id, self.wall())
            # A new neighbour may lack records we hold: hand them over.
            for message in encode_records(r.encode() for r in self.directory.records()):
                self._send_control(node_id, message)

    # --- data plane: TUN -> mesh --------------------------------------------------------

    def tun_packet(self, packet: bytes) -> None:
        """One packet read from the TUN device (the hot path)."""
        self.counters.tun_packets += 1
        version = packet[0] >> 4
        if version == 4:
            peer = self._peer_by_address.get(packet[16:20])
        elif version == 6:
            peer = self._peer_by_address.get(packet[24:40])
        else:
            return
        if peer is None:
            peer = self._lookup_prefix(packet, version)
            if peer is None:
                self.counters.tun_no_route += 1  # multicast too: the kernel's MLD and RS
                self._answer_icmp(icmp.unreachable(packet))
                return
        now = self._loop.time()  # type: ignore[union-attr]
        key = peer.public_key
        self.tx_bytes[key] = self.tx_bytes.get(key, 0) + len(packet)
        datagram = self.sessions.encrypt_for(peer, packet, now)
        if datagram is None:
            self._service()  # staged; a handshake may be queued
            return
        endpoint = peer.endpoint
        if type(endpoint) is tuple:
            self.transport.send_datagram(datagram, endpoint)
        else:
            self._send_relayed(datagram, endpoint)

    def tun_packets(self, packets: list[bytes]) -> None:
        """The segments of one TCP super-packet read from the TUN: one route, one batched seal.

        They share source and destination, so the first packet's look-up
        routes them all; anything unusual (no direct session yet, a relayed
        path, a session that must rekey first) takes `tun_packet` per packet.
        """
        first = packets[0]
        version = first[0] >> 4
        if version == 4:
            peer = self._peer_by_address.get(first[16:20])
        elif version == 6:
            peer = self._peer_by_address.get(first[24:40])
        else:
            peer = None
        endpoint = peer.endpoint if peer is not None else None
        datagrams = None
        if peer is not None and type(endpoint) is tuple:
            datagrams = self.sessions.encrypt_many(peer, packets, self._loop.time())  # type: ignore[union-attr]
        if datagrams is None:
            for packet in packets:
                self.tun_packet(packet)
            return
        assert peer is not None and type(endpoint) is tuple
        self.counters.tun_packets += len(packets)
        key = peer.public_key
        self.tx_bytes[key] = self.tx_bytes.get(key, 0) + sum(map(len, packets))
        send = self.transport.send_datagram
        for datagram in datagrams:
            send(datagram, endpoint)

    def _lookup_prefix(self, packet: bytes, version: int) -> Peer | None:
        """The slow path for leaf prefixes routed by other nodes."""
        raw = packet[16:20] if version == 4 else packet[24:40]
        try:
            address = ipaddress.ip_address(raw)
        except ValueError:
            return None
        entry = self.directory.lookup_address(address)
        if entry is None or entry.node_id == self.identity.node_id:
            return None
        return self.sessions.peer(entry.x25519_public_key)

    def _answer_icmp(self, answer: bytes | None) -> None:
        if answer is not None:
            self.counters.icmp_sent += 1
            self.transport.write_tun(answer)

    def _send_relayed(self, datagram: bytes, endpoint: Hashable) -> None:
        if not isinstance(endpoint, RelayAddress):
            return
        plan = self.routing.plan_send(endpoint.node_id, datagram)
        if plan is None:
            return
        self.counters.tun_relayed += 1
        if isinstance(plan, Direct):
            path = self.paths.get(plan.node_id)
            if path is not None and path.direct is not None:
                self.transport.send_datagram(plan.payload, path.direct)
        elif isinstance(plan, ViaRelay):
            self._send_control(plan.next_hop, plan.payload)

    # --- data plane: mesh -> TUN ----------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram from the UDP port (the hot path for transport data)."""
        if not data:
            self.counters.unknown_datagrams += 1
            return
        kind = data[0]
        if kind == 4:
            opened = self.sessions.open_transport(data, addr, self._loop.time())  # type: ignore[union-attr]
            if opened is None:
                return
            peer, payload = opened
            if payload and (payload[0] >> 4) in (4, 6):
                key = peer.public_key
                self.rx_bytes[key] = self.rx_bytes.get(key, 0) + len(payload)
                self._deliver(key, payload)
            else:
                self._on_control(peer.public_key, payload, addr)
        elif kind in (1, 2, 3):
            unknown_before = self.sessions.stats.unknown_peer
            self.sessions.receive_datagram(data, addr, self.now())
            if self.sessions.stats.unknown_peer != unknown_before:
                self._fetch_records_soon()
            self._service()
        elif kind == 5:
            self.discovery.datagram_received(data, addr)
        else:
            self.counters.unknown_datagrams += 1

    def datagrams_received(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        """The datagrams of one GRO read (one source): transport messages opened in one call."""
        for data in datagrams:
            if not data or data[0] != 4:  # a handshake or DHT message among them: one by one
                for each in datagrams:
                    self.datagram_received(each, addr)
                return
        rx_bytes = self.rx_bytes
        key = b""
        for peer, payload in self.sessions.open_many(datagrams, addr, self._loop.time()):  # type: ignore[union-attr]
            key = peer.public_key
            if payload and (payload[0] >> 4) in (4, 6):
                rx_bytes[key] = rx_bytes.get(key, 0) + len(payload)
                self._deliver(key, payload)
            else:
                self._on_control(key, payload, addr)
        if len(datagrams) >= BULK_BATCH and key:
            self.links.bulk_over_udp(key)

    def _deliver(self, peer_key: bytes, packet: bytes) -> None:
        """An IP packet out of a session: only from its owner, only to us (or our leaves)."""
        if packet[0] >> 4 == 4:
            source, destination = packet[12:16], packet[16:20]
        else:
            source, destination = packet[8:24], packet[24:40]
        owner = self._node_by_x25519.get(peer_key)
        if owner is None:
            self._forward_from_leaf(peer_key, packet, source)
            return
        if self.directory.by_address.get(source) != owner and not self._owns_prefix(owner, source):
            self.counters.source_rejected += 1
            return
        if destination in self._local_addresses:
            self.counters.delivered += 1
            self.transport.write_tun(packet)
            if self.links.has_link(peer_key) and self.directory.by_address.get(source) == owner:
                self.links.udp_from_linked_peer(peer_key)
            return
        leaf_peer = self._leaf_peer_by_address.get(destination)
        if leaf_peer is not None:
            self._encrypt_and_send(leaf_peer, packet)
            return
        self.counters.destination_rejected += 1

    def _owns_prefix(self, owner: bytes, source: bytes) -> bool:
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        entry = self.directory.lookup_address(address)
        return entry is not None and entry.node_id == owner

    def _encrypt_and_send(self, peer: Peer, packet: bytes) -> None:
        datagram = self.sessions.encrypt_for(peer, packet, self.now())
        if datagram is None:
            self._service()
            return
        if type(peer.endpoint) is tuple:
            self.transport.send_datagram(datagram, peer.endpoint)
        else:
            self._send_relayed(datagram, peer.endpoint)

    # --- leaves: stock WireGuard peers attached to this node -----------------------------

    def _add_leaf(self, leaf: LeafPeer) -> None:
        peer = self.sessions.add_peer(leaf.public_key, self.now())
        self._leaf_by_x25519[leaf.public_key] = leaf
        for prefix in leaf.addresses:
            if prefix.num_addresses == 1:
                self._leaf_peer_by_address[prefix.network_address.packed] = peer

    def _forward_from_leaf(self, peer_key: bytes, packet: bytes, source: bytes) -> None:
        """A leaf's packet: check it comes from the leaf's address, then route it onward."""
        leaf = self._leaf_by_x25519.get(peer_key)
        if leaf is None or not any(
            ipaddress.ip_address(source) in prefix for prefix in leaf.addresses
        ):
            self.counters.source_rejected += 1
            return
        if len(packet) > MESH_MTU:
            self._reply_to_leaf(peer_key, icmp.too_big(packet, MESH_MTU))
            return
        version = packet[0] >> 4
        destination = packet[16:20] if version == 4 else packet[24:40]
        if destination in self._local_addresses:
            self.counters.delivered += 1
            self.transport.write_tun(packet)
            return
        peer = self._peer_by_address.get(destination) or self._lookup_prefix(packet, version)
        if peer is None:
            self._reply_to_leaf(peer_key, icmp.unreachable(packet))
            return
        self._encrypt_and_send(peer, packet)

    def _reply_to_leaf(self, peer_key: bytes, answer: bytes | None) -> None:
        peer = self.sessions.peer(peer_key)
        if answer is not None and peer is not None:
            self.counters.icmp_sent += 1
            self._encrypt_and_send(peer, answer)

    # --- control payloads ------------------------------------------------------------------

    def _on_control(self, peer_key: bytes, payload: bytes, addr: Hashable) -> None:
        node_id = self._node_by_x25519.get(peer_key)
        if node_id is not None and type(addr) is tuple:
            path = self.paths.get(node_id)
            if path is None or not path.neighbour:
                self._mark_direct(peer_key, addr)
        if not payload or node_id is None:
            self._service()
            return
        kind = payload[0]
        try:
            if kind in (PayloadKind.GOSSIP, PayloadKind.PING, PayloadKind.PONG, PayloadKind.RELAY):
                self.routing.receive_control(node_id, payload, self.wall())
            elif kind == PayloadKind.NODE_RECORDS:
                for data in decode_records(payload):
                    self.accept_record(data)
            elif kind == PayloadKind.RECORD_REQUEST:
                wanted = [self.directory.record(n) for n in decode_record_request(payload)]
                for message in encode_records(r.encode() for r in wanted if r is not None):
                    self._send_control(node_id, message)
            elif kind == PayloadKind.RENDEZVOUS:
                if payload != RENDEZVOUS_REQUEST:
                    raise MalformedNodeMessage("bad rendezvous request")
                self._on_rendezvous(node_id)
            elif kind in _LINK_KINDS:
                self.links.on_message(peer_key, node_id, payload)
            elif kind == PayloadKind.ECHO_REQUEST:
                _, nonce = decode_echo(payload)
                self.sessions.send(peer_key, encode_echo(PayloadKind.ECHO_REPLY, nonce), self.now())
            elif kind == PayloadKind.ECHO_REPLY:
                _, nonce = decode_echo(payload)
                waiter = self._echo_waiters.pop(nonce, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(self.now())
            else:
                self.counters.control_malformed += 1
        except MalformedNodeMessage:
            self.counters.control_malformed += 1
        self._service()

    def _send_control(self, node_id: bytes, payload: bytes) -> None:
        entry = self.directory.get(node_id)
        if entry is not None:
            self.sessions.send(entry.x25519_public_key, payload, self.now())

    # --- the service loop: drain every core's output, re-arm one timer ----------------------

    def _service(self) -> None:
        """Move output between the cores until none is left, then re-arm the timer."""
        if self._loop is None:
            return
        for _ in range(64):  # bounded: each pass only reacts to the previous one's output
            busy = False
            for message, neighbour in ((m, n) for n, m in self.routing.messages_to_send()):
                busy = True
                self._send_control(neighbour, message)
            for routing_event in self.routing.events():
                busy = True
                self._on_routing_event(routing_event)
            for datagram, addr in self.sessions.datagrams_to_send(self.now()):
                busy = True
                if type(addr) is tuple:
                    self.transport.send_datagram(datagram, addr)
                else:
                    self._send_relayed(datagram, addr)
            while (event := self.sessions.next_event()) is not None:
                busy = True
                self._on_session_event(event)
            if not busy:
                break
        self._arm_timer()

    def _on_session_event(self, event: object) -> None:
        if isinstance(event, PacketReceived):
            self._deliver(event.peer, event.packet)
        elif isinstance(event, ControlReceived):
            self._on_control(event.peer, event.payload, None)
        elif isinstance(event, HandshakeCompleted | EndpointChanged):
            peer = self.sessions.peer(event.peer)
            if peer is not None and type(peer.endpoint) is tuple:
                self._mark_direct(event.peer, peer.endpoint)
        elif isinstance(event, HandshakeAbandoned):
            node_id = self._node_by_x25519.get(event.peer)
            if node_id is not None:
                self._use_relay(node_id)

    def _on_routing_event(self, event: object) -> None:
        if isinstance(event, RelayDelivered):
            self.sessions.receive_datagram(event.inner, RelayAddress(event.source), self.now())
        elif isinstance(event, BroadcastReceived):
            if event.body.startswith(NODE_RECORD_BROADCAST):
                self.accept_record(event.body[len(NODE_RECORD_BROADCAST) :])
        elif isinstance(event, NeighbourDead):
            path = self.paths.get(event.node_id)
            if path is not None:
                path.neighbour = False
            self._use_relay(event.node_id)

    def _arm_timer(self) -> None:
        loop = self._loop
        if loop is None or self._stopping:
            return
        deadlines = [self.sessions.get_timer()]
        routing_due = self.routing.get_timer()
        if routing_due is not None:
            deadlines.append(routing_due - self._wall_offset)
        when = min((d for d in deadlines if d is not None), default=None)
        if when == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = None if when is None else loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        now = self.now()
        self.sessions.handle_timer(now)
        self.routing.handle_timer(now + self._wall_offset)
        self._service()

    # --- views for the control socket and the resolver ---------------------------------------

    def resolve_target(self, target: str) -> Resolved | None:
        """A node by mesh address, name, NAME.mesh or key name."""
        text = target.strip().lower().rstrip(".")
        with contextlib.suppress(ValueError):
            return self.directory.lookup_address(ipaddress.ip_address(text))
        label = text.split(".", 1)[0]
        return self.directory.lookup_name(label)

    async def netcheck(self, max_peers: int = 8) -> dict[str, Any]:
        """This node's NAT behaviour as its peers see it (`gossipmesh netcheck`)."""
        peers = [(p.host, p.port) for p in self.discovery.known_peers()][:max_peers]
        if not peers:
            # No peer ever answered: ask the bootstrap nodes, so that a node whose
            # UDP is blocked reports "blocked", not "untested" (host names skipped:
            # resolving them is the runtime's job).
            peers = [addr for addr in self.options.bootstrap if _is_ip_literal(addr[0])]
            peers = peers[:max_peers]
        observed = await asyncio.gather(*(self.discovery.observe(addr) for addr in peers))
        answers = [
            {"peer": f"{host}:{port}", "sees_us_as": f"{seen[0]}:{seen[1]}"}
            for (host, port), seen in zip(peers, observed, strict=True)
            if seen is not None
        ]
        seen_set = {seen for seen in observed if seen is not None}
        own_hosts = {host for host, _ in self.options.host_endpoints}
        if not peers:
            mapping = "unknown: no peer known yet"
        elif not seen_set:
            mapping = "unknown: no peer answered over UDP"
        elif all(host in own_hosts for host, _ in seen_set):
            mapping = "no NAT: peers see this host's own address"
        elif len(seen_set) == 1:
            mapping = (
                "endpoint-independent: every peer sees the same address and port"
                if len(answers) > 1
                else "endpoint-independent as far as one peer can tell"
            )
        else:
            mapping = "endpoint-dependent (symmetric NAT): peers see different ports"
        return {
            "udp": "works"
            if answers
            else ("blocked or no peer reachable" if peers else "untested"),
            "public_addresses": sorted({f"{host}:{port}" for host, port in seen_set}),
            "mapping": mapping,
            "host_endpoints": [f"{host}:{port}" for host, port in self.options.host_endpoints],
            "peers_asked": len(peers),
            "answers": answers,
        }

    async def lookup_name(self, label: str) -> Resolved | None:
        """A node by name: the directory first, else the DHT (its record is then kept)."""
        entry = self.directory.lookup_name(label)
        if entry is not None or self._loop is None:
            return entry
        record = await self.discovery.lookup_name(label)
        if record is None:
            return None
        if self.directory.update(record):
            self._directory_changed()
        return self.directory.get(record.node_id)

    async def ping(self, target: str, count: int = 3, timeout: float = 2.0) -> dict[str, Any]:
        """Mesh-level echo through the end-to-end session: RTTs and the path taken."""
        entry = self.resolve_target(target)
        if entry is None or entry.node_id == self.identity.node_id:
            raise LookupError(f"{target}: not a known mesh node")
        probes = []
        assert self._loop is not None
        for _ in range(max(1, min(count, 100))):
            nonce = self.rng.getrandbits(64)
            waiter: asyncio.Future[float] = self._loop.create_future()
            self._echo_waiters[nonce] = waiter
            sent_at = self.now()
            self.sessions.send(
                entry.x25519_public_key, encode_echo(PayloadKind.ECHO_REQUEST, nonce), sent_at
            )
            self._service()
            try:
                answered = await asyncio.wait_for(waiter, timeout)
                rtt: float | None = (answered - sent_at) * 1000
            except TimeoutError:
                rtt = None
            finally:
                self._echo_waiters.pop(nonce, None)
            probes.append({"rtt_ms": rtt, "path": self.describe_path(entry.node_id)})
        return {"target": self.display_name(entry), "probes": probes}

    def _live_direct_endpoint(self, node_id: bytes) -> tuple[str, int] | None:
        """The direct endpoint in use for a node, if the path is still live.

        A session keeps its last endpoint after the node leaves or dies: it is
        only a direct path while the node is a live neighbour or routable.
        """
        entry = self.directory.get(node_id)
        peer = None if entry is None else self.sessions.peer(entry.x25519_public_key)
        if peer is None or type(peer.endpoint) is not tuple:
            return None
        path = self.paths.get(node_id)
        if (path is not None and path.neighbour) or self.routing.route(node_id) is not None:
            return peer.endpoint
        return None

    def describe_path(self, node_id: bytes) -> str:
        direct = self._live_direct_endpoint(node_id)
        if direct is not None:
            return f"direct {direct[0]}:{direct[1]}"
        route = next((r for r in self.routing.routes() if r.destination == node_id), None)
        if route is None:
            return "no route"
        hops = " -> ".join(self._short_name(hop) for hop in route.path[1:])
        return f"relayed {hops}"

    def _short_name(self, node_id: bytes) -> str:
        entry = self.directory.get(node_id)
        return node_id.hex()[:8] if entry is None else self.display_name(entry)

    @staticmethod
    def display_name(entry: Resolved) -> str:
        return entry.name or entry.key_name

    def status(self) -> dict[str, Any]:
        counters = {
            key: value for key, value in vars(self.counters).items() if isinstance(value, int)
        }
        counters.update({f"session_{k}": v for k, v in self.sessions.stats.as_dict().items()})
        for key, value in self.discovery.stats.as_dict().items():
            if isinstance(value, int):
                counters[f"dht_{key}"] = value
            elif isinstance(value, dict):
                counters.update({f"dht_{key}_{k}": v for k, v in value.items()})
        counters.update({f"routing_drop_{k}": v for k, v in self.routing.stats.drops.items()})
        counters["routing_gossip_bytes_out"] = self.routing.stats.gossip_bytes_out()
        own = self.directory.get(self.identity.node_id)
        return {
            "node_id": self.identity.node_id.hex(),
            "public_key": _b64(self.identity.public_key),
            "ipv4": str(self.ipv4),
            "ipv6": str(self.ipv6),
            "name": own.name if own is not None and own.name else None,
            "key_name": key_name(self.identity.node_id),
            "listen_port": self.options.listen_port,
            "uptime_s": round(self.now() - self._started_at, 1),
            "known_nodes": len(self.directory) - 1,
            "neighbours": len(self.routing.neighbours()),
            "reachable": len(self.routing.routes()),
            "counters": counters,
            "stream_links": self.links.status(),
        }

    def peers(self) -> list[dict[str, Any]]:
        now = self.now()
        rows = []
        measured = self.routing.monitor.measured()
        for entry in sorted(self.directory, key=lambda e: self.display_name(e)):
            if entry.node_id == self.identity.node_id:
                continue
            peer = self.sessions.peer(entry.x25519_public_key)
            route = self.routing.route(entry.node_id)
            direct = self._live_direct_endpoint(entry.node_id) is not None
            via = None
            if not direct and route is not None:
                via = self._short_name(route)
            handshake = None if peer is None else peer.last_handshake_completed
            rtt = measured.get(entry.node_id)
            rows.append(
                {
                    "name": self.display_name(entry),
                    "node_id": entry.node_id.hex(),
                    "ipv4": None if entry.ipv4 is None else str(entry.ipv4),
                    "ipv6": str(entry.ipv6),
                    "path": "direct" if direct else ("relayed" if route is not None else "none"),
                    "via": via,
                    "endpoint": _format_endpoint(peer.endpoint if peer is not None else None),
                    "rtt_ms": None if rtt is None else round(rtt / 1000, 2),
                    "last_handshake_s": None if handshake is None else round(now - handshake, 1),
                    "rx_bytes": self.rx_bytes.get(entry.x25519_public_key, 0),
                    "tx_bytes": self.tx_bytes.get(entry.x25519_public_key, 0),
                    "stream_link": self.links.has_link(entry.x25519_public_key),
                }
            )
        return rows

    def wg_config(self, leaf_name: str) -> dict[str, Any]:
        """What a leaf's wg-quick file needs from this node."""
        leaf = next((leaf for leaf in self.options.leaves if leaf.name == leaf_name.lower()), None)
        if leaf is None:
            known = ", ".join(leaf.name for leaf in self.options.leaves) or "none configured"
            raise LookupError(f"no leaf named {leaf_name!r} in this node's config ({known})")
        endpoints = list(self.options.host_endpoints)
        reflexive = self.discovery.reflexive_endpoint()
        if reflexive is not None:
            endpoints.append((reflexive.host, reflexive.port))
        return {
            "leaf": leaf.name,
            "addresses": [str(prefix) for prefix in leaf.addresses],
            "node_public_key": _b64(self.identity.x25519_public_key),
            "preshared_key": _b64(self.secret.session_psk),
            "endpoints": [f"{host}:{port}" for host, port in endpoints],
            "allowed_ips": [str(self.options.ipv4_network), "fd00::/8"],
            "mtu": MESH_MTU,
            "dns": [str(address) for address in self.options.service_addresses],
        }

    def routes(self) -> list[dict[str, Any]]:
        return [
            {
                "destination": self._short_name(route.destination),
                "next_hop": self._short_name(route.next_hop),
                "hops": route.hops,
                "metric": round(route.metric_ms, 2),
                "path": " -> ".join(self._short_name(hop) for hop in route.path),
            }
            for route in self.routing.routes()
        ]


def loop_jitter(rng: random.Random) -> float:
    """A factor in [0.9, 1.1]: periodic rounds of many nodes must not synchronise."""
    return 0.9 + 0.2 * rng.random()


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _format_endpoint(endpoint: object) -> str | None:
    if isinstance(endpoint, tuple):
        return f"{endpoint[0]}:{endpoint[1]}"
    if isinstance(endpoint, RelayAddress):
        return "relay"
    return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
