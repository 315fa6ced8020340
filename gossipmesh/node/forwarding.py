"""Forwarding: IP packets between the TUN, the sessions and the relays (the hot path).

- TUN -> `tun_packet`: destination address -> session peer (one dict
  look-up) -> `encrypt_for` (one AEAD call) -> one datagram out. A peer
  reached through relays has a `RelayAddress` as its session endpoint: its
  end-to-end WireGuard message travels inside the session with the next hop.
- session -> `deliver`: the source must be the sending node's address (or a
  prefix it routes), the destination ours or a leaf's; then the TUN.
- Leaves (stock WireGuard peers of this node) are forwarded onward after the
  same source check against their configured prefixes.

The packet filter (`InboundFilter`, the signed policy in a network with
an authority) sits here: every packet from the mesh to this node or its
leaves passes `allow_inbound` in `deliver` (and in `NodeLinks.received`),
and every packet this node or a leaf sends into the mesh is noted
(`note_outbound`), so that replies to flows opened from here pass.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from gossipmesh import icmp
from gossipmesh.node.address_map import AddressMap
from gossipmesh.node.events import RelayAddress
from gossipmesh.node.options import MESH_MTU, NodeCounters
from gossipmesh.node.outbox import Outbox
from gossipmesh.node.paths import PathSelector
from gossipmesh.routing.core import Direct, RoutingCore, ViaRelay
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.peer import Peer


class LinkedPeers(Protocol):
    """What delivery asks of stream links (`NodeLinks`): is a peer linked, and news of UDP."""

    def has_link(self, peer_key: bytes) -> bool: ...

    def udp_from_linked_peer(self, peer_key: bytes, now: float) -> None: ...


class InboundFilter(Protocol):
    """The data path's view of the policy filter (node/policy_gate.py)."""

    def allow_inbound(self, packet: bytes | memoryview, source: bytes, now: float) -> bool:
        """May this packet from node `source` reach this host or a leaf (counted if not)?"""
        ...

    def note_outbound(self, packet: bytes | memoryview, now: float) -> None:
        """A packet leaves for the mesh: its flow's replies are allowed back."""
        ...


class Forwarder:
    """Moves IP packets; decides nothing about paths (that is `PathSelector`)."""

    def __init__(
        self,
        addresses: AddressMap,
        sessions: SessionManager,
        routing: RoutingCore,
        paths: PathSelector,
        outbox: Outbox,
        counters: NodeCounters,
        service: Callable[[], None],
        send_control: Callable[[bytes, bytes], None],
    ) -> None:
        self._addresses = addresses
        self._sessions = sessions
        self._routing = routing
        addresses.alive = lambda node_id: routing.route(node_id) is not None
        self._paths = paths
        self._outbox = outbox
        self._counters = counters
        self._service = service
        self._send_control = send_control
        self.links: LinkedPeers | None = None
        self.filter: InboundFilter | None = None
        """None in a network without an authority: nothing is filtered."""
        self.tx_bytes: dict[bytes, int] = {}
        """Bytes of IP packets sent to each peer (by X25519 key), for `peers`."""
        self.rx_bytes: dict[bytes, int] = {}

    # --- TUN -> mesh -----------------------------------------------------------------

    def tun_packet(self, packet: bytes, now: float) -> None:
        """One packet read from the TUN device."""
        self._counters.tun_packets += 1
        version = packet[0] >> 4
        if version == 4:
            destination = packet[16:20]
        elif version == 6:
            destination = packet[24:40]
        else:
            return
        peer = self._addresses.peer_by_address.get(destination)
        if peer is None:
            peer = self._addresses.peer_for_prefix(destination)
            if peer is None:
                self._counters.tun_no_route += 1  # multicast too: the kernel's MLD and RS
                self._answer_icmp(icmp.unreachable(packet))
                return
        key = peer.public_key
        self.tx_bytes[key] = self.tx_bytes.get(key, 0) + len(packet)
        if self.filter is not None:
            self.filter.note_outbound(packet, now)
        datagram = self._sessions.encrypt_for(peer, packet, now)
        if datagram is None:
            self._service()  # staged; a handshake may be queued
            return
        endpoint = peer.endpoint
        if type(endpoint) is tuple:
            self._outbox.datagrams.append((datagram, endpoint))
        else:
            self.send_relayed(datagram, endpoint)

    def tun_packets(self, packets: list[bytes], now: float) -> None:
        """The segments of one TCP super-packet read from the TUN: one route, one batched seal.

        They share source and destination, so the first packet's look-up
        routes them all; anything unusual (no direct session yet, a relayed
        path, a session that must rekey first) takes `tun_packet` per packet.
        """
        first = packets[0]
        version = first[0] >> 4
        if version == 4:
            peer = self._addresses.peer_by_address.get(first[16:20])
        elif version == 6:
            peer = self._addresses.peer_by_address.get(first[24:40])
        else:
            peer = None
        endpoint = peer.endpoint if peer is not None else None
        datagrams = None
        if peer is not None and type(endpoint) is tuple:
            datagrams = self._sessions.encrypt_many(peer, packets, now)
        if datagrams is None:
            for packet in packets:
                self.tun_packet(packet, now)
            return
        assert peer is not None and type(endpoint) is tuple
        if self.filter is not None:
            self.filter.note_outbound(first, now)  # one flow: the segments share its header
        self._counters.tun_packets += len(packets)
        key = peer.public_key
        self.tx_bytes[key] = self.tx_bytes.get(key, 0) + sum(map(len, packets))
        self._outbox.datagrams.extend([(datagram, endpoint) for datagram in datagrams])

    def _answer_icmp(self, answer: bytes | None) -> None:
        if answer is not None:
            self._counters.icmp_sent += 1
            self._outbox.write_tun(answer)

    def send_relayed(self, datagram: bytes, endpoint: Hashable) -> None:
        """An end-to-end message for a node reached through relays."""
        if not isinstance(endpoint, RelayAddress):
            return
        plan = self._routing.plan_send(endpoint.node_id, datagram)
        if plan is None:
            return
        self._counters.tun_relayed += 1
        if isinstance(plan, Direct):
            path = self._paths.paths.get(plan.node_id)
            if path is not None and path.direct is not None:
                self._outbox.send(plan.payload, path.direct)
        elif isinstance(plan, ViaRelay):
            self._send_control(plan.next_hop, plan.payload)

    def encrypt_and_send(self, peer: Peer, packet: bytes, now: float) -> None:
        """Seal one packet for a session peer and send it on the peer's path."""
        datagram = self._sessions.encrypt_for(peer, packet, now)
        if datagram is None:
            self._service()
            return
        if type(peer.endpoint) is tuple:
            self._outbox.send(datagram, peer.endpoint)
        else:
            self.send_relayed(datagram, peer.endpoint)

    # --- mesh -> TUN -------------------------------------------------------------------

    def deliver(self, peer_key: bytes, packet: bytes, now: float) -> None:
        """An IP packet out of a session: only from its owner, only to us (or our leaves)."""
        if packet[0] >> 4 == 4:
            source, destination = packet[12:16], packet[16:20]
        else:
            source, destination = packet[8:24], packet[24:40]
        addresses = self._addresses
        owner = addresses.node_by_x25519.get(peer_key)
        if owner is None:
            self.forward_from_leaf(peer_key, packet, source, now)
            return
        own_address = addresses.directory.by_address.get(source) == owner
        if not own_address and not addresses.may_send_from(owner, source):
            self._counters.source_rejected += 1
            return
        packet_filter = self.filter
        if packet_filter is not None and not packet_filter.allow_inbound(packet, owner, now):
            return
        if destination in addresses.local:
            self._counters.delivered += 1
            self._outbox.tun_writes.append(packet)
            links = self.links
            if own_address and links is not None and links.has_link(peer_key):
                links.udp_from_linked_peer(peer_key, now)
            return
        leaf_peer = addresses.leaf_peer_by_address.get(destination)
        if leaf_peer is not None:
            self.encrypt_and_send(leaf_peer, packet, now)
            return
        if addresses.routes_here(destination):  # a subnet router: the kernel takes it on
            self._counters.delivered += 1
            self._outbox.tun_writes.append(packet)
            return
        self._counters.destination_rejected += 1

    def forward_from_leaf(self, peer_key: bytes, packet: bytes, source: bytes, now: float) -> None:
        """A leaf's packet: check it comes from the leaf's address, then route it onward."""
        if not self._addresses.leaf_may_send_from(peer_key, source):
            self._counters.source_rejected += 1
            return
        if len(packet) > MESH_MTU:
            self._reply_to_leaf(peer_key, icmp.too_big(packet, MESH_MTU), now)
            return
        version = packet[0] >> 4
        destination = packet[16:20] if version == 4 else packet[24:40]
        if destination in self._addresses.local:
            self._counters.delivered += 1
            self._outbox.write_tun(packet)
            return
        peer = self._addresses.peer_for(destination)
        if peer is None:
            self._reply_to_leaf(peer_key, icmp.unreachable(packet), now)
            return
        if self.filter is not None:
            self.filter.note_outbound(packet, now)
        self.encrypt_and_send(peer, packet, now)

    def _reply_to_leaf(self, peer_key: bytes, answer: bytes | None, now: float) -> None:
        peer = self._sessions.peer(peer_key)
        if answer is not None and peer is not None:
            self._counters.icmp_sent += 1
            self.encrypt_and_send(peer, answer, now)
