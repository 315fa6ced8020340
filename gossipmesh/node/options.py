"""What configures a node core, what it counts, and the MTU every node shares."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK
from gossipmesh.leaves import LeafPeer
from gossipmesh.routing.relay import RELAY_OVERHEAD

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
    max_neighbours: int = 8
    """Routing neighbours at most (node/neighbours.py); other direct peers stay passive."""
    probe_interval: float = 10.0
    """Seconds between rounds that look for direct paths to non-neighbours."""
    directory_interval: float = 5.0
    """Seconds between rounds that fetch records the node lacks."""
    record_lifetime: int = 1800
    rpc_timeout: float = 2.0
    leaves: tuple[LeafPeer, ...] = ()
    service_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    """Extra local addresses (the MagicDNS resolver) that leaves may reach on this host."""
    advertised_routes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Subnets behind this node that it routes for (`up --advertise-routes`, issue 18)."""
    exit_node: str | None = None
    """The node (by name) this node sends everything outside the mesh to (`--exit-node`)."""
    authority_public_key: bytes | None = None
    """The network authority's Ed25519 key (docs/trust.md); None: a shared-secret-only network."""
    certificate: bytes = b""
    """This node's encoded certificate from that authority, carried in its node record."""


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
    records_not_newer: int = 0
    """Records received that we held already (or an older copy): dropped unverified."""
    icmp_sent: int = 0
    control_malformed: int = 0
    control_rate_limited: int = 0
    """Node control messages from one peer beyond its rate (node/control.py), dropped."""
    rendezvous_sent: int = 0
    rendezvous_answered: int = 0
    nodes_excluded: int = 0
    """Admitted nodes taken out again: their certificate was revoked or expired."""
    extra: dict[str, int] = field(default_factory=dict)
