"""What `status`, `peers`, `routes`, `ping` and `wg-config` show: read-only views of a core.

Plain dicts with raw numbers (the CLI formats them); nothing here changes
the node. The DHT's figures come from the driver, which owns that service.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from gossipmesh.directory import Resolved
from gossipmesh.names import key_name
from gossipmesh.node.core import NodeCore
from gossipmesh.node.events import Address, RelayAddress
from gossipmesh.node.options import MESH_MTU
from gossipmesh.policy.counters import DROP_REASONS
from gossipmesh.session.peer import Peer
from gossipmesh.trust.document import DocumentKind


def display_name(entry: Resolved) -> str:
    return entry.name or entry.key_name


class NodeViews:
    """Status tables over one node core."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core

    def resolve_target(self, target: str) -> Resolved | None:
        """A node by mesh address, name, NAME.mesh or key name."""
        text = target.strip().lower().rstrip(".")
        with contextlib.suppress(ValueError):
            return self.core.directory.lookup_address(ipaddress.ip_address(text))
        label = text.split(".", 1)[0]
        return self.core.directory.lookup_name(label)

    def describe_path(self, node_id: bytes) -> str:
        core = self.core
        direct = core.paths.live_direct_endpoint(node_id)
        if direct is not None:
            return f"direct {direct[0]}:{direct[1]}"
        route = next((r for r in core.routing.routes() if r.destination == node_id), None)
        if route is None:
            return "no route"
        hops = " -> ".join(self.short_name(hop) for hop in route.path[1:])
        return f"relayed {hops}"

    def short_name(self, node_id: bytes) -> str:
        entry = self.core.directory.get(node_id)
        return node_id.hex()[:8] if entry is None else display_name(entry)

    def status(self, now: float, dht_stats: Mapping[str, Any]) -> dict[str, Any]:
        core = self.core
        counters: dict[str, Any] = {
            key: value for key, value in vars(core.counters).items() if isinstance(value, int)
        }
        counters.update({f"session_{k}": v for k, v in core.sessions.stats.as_dict().items()})
        for key, value in dht_stats.items():
            if isinstance(value, int):
                counters[f"dht_{key}"] = value
            elif isinstance(value, dict):
                counters.update({f"dht_{key}_{k}": v for k, v in value.items()})
        counters.update({f"routing_drop_{k}": v for k, v in core.routing.stats.drops.items()})
        counters["routing_gossip_bytes_out"] = core.routing.stats.gossip_bytes_out()
        counters["routing_records_issued"] = core.routing.stats.records_issued
        counters["routing_route_computations"] = core.routing.stats.route_computations
        bound = core.paths.bound
        counters["neighbour_prunes_sent"] = bound.pruned_sent
        counters["neighbour_prunes_received"] = bound.pruned_received
        counters["neighbour_evictions"] = bound.evictions
        counters["passive_paths_expired"] = bound.idle_expired
        documents = core.trust.documents.counters
        counters["documents_accepted"] = documents.accepted
        counters["documents_pushed"] = documents.pushed
        counters["document_chunks_dropped"] = documents.chunks_dropped
        counters.update({f"documents_refused_{k}": v for k, v in documents.refused.items()})
        counters.update({f"trust_refused_{k}": v for k, v in core.gate.refused.items()})
        if core.trust.policy is not None:
            packet_filter = core.trust.policy.filter
            counters["policy_flows"] = len(packet_filter)
            for key, value in packet_filter.counters.as_dict().items():
                prefix = "policy_dropped_" if key in DROP_REASONS else "policy_"
                counters[prefix + key] = value
        own = core.directory.get(core.identity.node_id)
        return {
            "node_id": core.identity.node_id.hex(),
            "public_key": _b64(core.identity.public_key),
            "ipv4": str(core.ipv4),
            "ipv6": str(core.ipv6),
            "name": own.name if own is not None and own.name else None,
            "key_name": key_name(core.identity.node_id),
            "listen_port": core.options.listen_port,
            "uptime_s": round(now - core.started_at, 1),
            "subnets": self.subnets(),
            "known_nodes": len(core.directory) - 1,
            "neighbours": len(core.routing.neighbours()),
            "max_neighbours": bound.limit,
            "passive_peers": len(bound.passive),
            "reachable": len(core.routing.routes()),
            "counters": counters,
            "stream_links": core.links.status(),
        }

    def trust(self) -> dict[str, Any]:
        """`gossipmesh policy show`: the authority and the documents in force here."""
        core = self.core
        authority = core.options.authority_public_key
        held = {
            kind.name.lower(): {
                "version": document.version,
                "issued_at": document.issued_at,
                "digest": document.digest.hex(),
                "bytes": len(document.payload),
            }
            for kind, document in core.trust.documents.held.items()
        }
        policy = core.trust.documents.held.get(DocumentKind.POLICY)
        return {
            "authority": None if authority is None else _b64(authority),
            "documents": held,
            "policy_source": None if policy is None else policy.payload.decode("utf-8", "replace"),
        }

    def peers(self, now: float) -> list[dict[str, Any]]:
        core = self.core
        rows = []
        measured = core.routing.monitor.measured()
        for entry in sorted(core.directory, key=display_name):
            if entry.node_id == core.identity.node_id:
                continue
            key = entry.x25519_public_key
            peer = core.sessions.peer(key)
            route = core.routing.route(entry.node_id)
            direct = core.paths.live_direct_endpoint(entry.node_id) is not None
            via = None
            if not direct and route is not None:
                via = self.short_name(route)
            handshake = None if peer is None else peer.last_handshake_completed
            rtt = measured.get(entry.node_id)
            rows.append(
                {
                    "name": display_name(entry),
                    "node_id": entry.node_id.hex(),
                    "ipv4": None if entry.ipv4 is None else str(entry.ipv4),
                    "ipv6": str(entry.ipv6),
                    "path": "direct" if direct else ("relayed" if route is not None else "none"),
                    "via": via,
                    "endpoint": _format_endpoint(peer.endpoint if peer is not None else None),
                    "rtt_ms": None if rtt is None else round(rtt / 1000, 2),
                    "last_handshake_s": None if handshake is None else round(now - handshake, 1),
                    "rx_bytes": core.forwarder.rx_bytes.get(key, 0),
                    "tx_bytes": core.forwarder.tx_bytes.get(key, 0),
                    "stream_link": core.links.has_link(key),
                    "neighbour": core.paths.is_neighbour(entry.node_id),
                    "role": _role(core.paths.is_neighbour(entry.node_id), direct, peer),
                    "groups": list(core.gate.groups(entry.node_id)),
                }
            )
        return rows

    def routes(self) -> list[dict[str, Any]]:
        return [
            {
                "destination": self.short_name(route.destination),
                "next_hop": self.short_name(route.next_hop),
                "hops": route.hops,
                "metric": round(route.metric_ms, 2),
                "path": " -> ".join(self.short_name(hop) for hop in route.path),
            }
            for route in self.core.routing.routes()
        ]

    def subnets(self) -> list[dict[str, Any]]:
        """Subnets routed by nodes (issue 18): this node's own, approved and refused ones."""
        core = self.core
        own_id = core.identity.node_id
        rows = [
            {"prefix": str(prefix), "router": "this node", "status": "advertised"}
            for prefix in core.options.advertised_routes
        ]
        in_use = {}
        for prefix, _ in core.directory.prefixes:
            peer = core.addresses.peer_for_prefix(prefix.network_address.packed)
            in_use[prefix] = (
                None if peer is None else core.addresses.node_by_x25519.get(peer.public_key)
            )
        rows += [
            {
                "prefix": str(prefix),
                "router": self.short_name(owner),
                "status": "in use" if in_use.get(prefix) == owner else "approved",
            }
            for prefix, owner in core.directory.prefixes
            if owner != own_id
        ]
        rows += [
            {"prefix": str(prefix), "router": self.short_name(owner), "status": "refused"}
            for owner, refused in core.directory.refused_prefixes.items()
            if owner != own_id
            for prefix in refused
        ]
        return rows

    def wg_config(self, leaf_name: str, reflexive: Address | None) -> dict[str, Any]:
        """What a leaf's wg-quick file needs from this node."""
        options = self.core.options
        leaf = next((leaf for leaf in options.leaves if leaf.name == leaf_name.lower()), None)
        if leaf is None:
            known = ", ".join(leaf.name for leaf in options.leaves) or "none configured"
            raise LookupError(f"no leaf named {leaf_name!r} in this node's config ({known})")
        endpoints = list(options.host_endpoints)
        if reflexive is not None:
            endpoints.append(reflexive)
        return {
            "leaf": leaf.name,
            "addresses": [str(prefix) for prefix in leaf.addresses],
            "node_public_key": _b64(self.core.identity.x25519_public_key),
            "preshared_key": _b64(self.core.secret.session_psk),
            "endpoints": [f"{host}:{port}" for host, port in endpoints],
            "allowed_ips": [str(options.ipv4_network), "fd00::/8"],
            "mtu": MESH_MTU,
            "dns": [str(address) for address in options.service_addresses],
        }


def netcheck_report(
    peers: list[Address],
    observed: list[Address | None],
    host_endpoints: tuple[Address, ...],
) -> dict[str, Any]:
    """This node's NAT behaviour from how each asked peer saw us (`gossipmesh netcheck`)."""
    answers = [
        {"peer": f"{host}:{port}", "sees_us_as": f"{seen[0]}:{seen[1]}"}
        for (host, port), seen in zip(peers, observed, strict=True)
        if seen is not None
    ]
    seen_set = {seen for seen in observed if seen is not None}
    own_hosts = {host for host, _ in host_endpoints}
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
        "udp": "works" if answers else ("blocked or no peer reachable" if peers else "untested"),
        "public_addresses": sorted({f"{host}:{port}" for host, port in seen_set}),
        "mapping": mapping,
        "host_endpoints": [f"{host}:{port}" for host, port in host_endpoints],
        "peers_asked": len(peers),
        "answers": answers,
    }


def _format_endpoint(endpoint: object) -> str | None:
    if isinstance(endpoint, tuple):
        return f"{endpoint[0]}:{endpoint[1]}"
    if isinstance(endpoint, RelayAddress):
        return "relay"
    return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _role(neighbour: bool, direct: bool, peer: Peer | None) -> str | None:
    """neighbour (a routing link), passive (direct, no link) or relayed-session (live keys
    over relays; they are zeroed once the session has been idle 540 s)."""
    if neighbour:
        return "neighbour"
    if direct:
        return "passive"
    if peer is not None and peer.current is not None:
        return "relayed-session"
    return None
