"""Who owns which overlay address: the data plane's look-ups, updated on directory change.

One dict look-up per packet maps a destination address to its session
peer; the reverse map (session key -> node id) tells whose packet arrived,
and the source check makes sure a node only sends from its own addresses
or the prefixes of its leaves. Leaves (stock WireGuard peers attached to
this node) are session peers with no record: their prefixes are local.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from gossipmesh.directory import Directory, DirectoryChanges, Resolved
from gossipmesh.leaves import LeafPeer
from gossipmesh.node.options import NodeOptions
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.peer import Peer


class AddressMap:
    """Overlay address -> session peer, session key -> node, and what is local."""

    def __init__(self, directory: Directory, sessions: SessionManager, own_id: bytes) -> None:
        self.directory = directory
        self._sessions = sessions
        self._own_id = own_id
        self.peer_by_address: dict[bytes, Peer] = {}
        self.node_by_x25519: dict[bytes, bytes] = {}
        self.local: set[bytes] = set()
        """Destination addresses delivered to this host's TUN (raw bytes)."""
        self.leaf_by_x25519: dict[bytes, LeafPeer] = {}
        self.leaf_peer_by_address: dict[bytes, Peer] = {}
        self._indexed: dict[bytes, tuple[Peer, tuple[bytes, ...]]] = {}
        """Node id -> its session peer and the addresses it holds in `peer_by_address`."""
        self.alive: Callable[[bytes], bool] = lambda node_id: True
        self.exit_node: Callable[[], bytes | None] = lambda: None
        """The node id of the exit this node sends its default route to (`--exit-node`)."""
        """Does the routing table reach this node? (set by the forwarder; picks a router)"""
        self.routed_here: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        """Subnets behind this node (`--advertise-routes`): their packets go to the TUN too."""

    def add_local(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        self.local.add(address.packed)

    def add_own(
        self,
        ipv6: ipaddress.IPv6Address,
        ipv4: ipaddress.IPv4Address,
        options: NodeOptions,
        now: float,
    ) -> None:
        """This node's addresses, its service addresses and its leaves' sessions."""
        for address in (ipv6, ipv4, *options.service_addresses):
            self.add_local(address)
        for leaf in options.leaves:
            self.add_leaf(leaf, now)
        self.routed_here = options.advertised_routes
        if options.exit_node:
            name = options.exit_node
            self.exit_node = lambda: getattr(self.directory.lookup_name(name), "node_id", None)

    def routes_here(self, destination: bytes) -> bool:
        """Is `destination` in a subnet this node routes for (the kernel forwards it on)?"""
        if not self.routed_here:
            return False
        try:
            address = ipaddress.ip_address(destination)
        except ValueError:
            return False
        return any(address in prefix for prefix in self.routed_here)

    def remove_local(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        self.local.discard(address.packed)

    def add_leaf(self, leaf: LeafPeer, now: float) -> None:
        peer = self._sessions.add_peer(leaf.public_key, now)
        self.leaf_by_x25519[leaf.public_key] = leaf
        for prefix in leaf.addresses:
            if prefix.num_addresses == 1:
                self.leaf_peer_by_address[prefix.network_address.packed] = peer

    def rebuild(self, changes: DirectoryChanges, now: float) -> tuple[list[Resolved], set[bytes]]:
        """Re-index what a directory change moved: (entries new to the sessions, departed keys).

        O(changed entries): a node joining a mesh of n does O(n) work here in all.
        """
        newcomers = []
        departed: set[bytes] = set()
        for node_id in changes.removed:
            indexed = self._indexed.pop(node_id, None)
            if indexed is not None:
                peer, addresses = indexed
                self._unindex(peer, addresses)
                del self.node_by_x25519[peer.public_key]
                departed.add(peer.public_key)
        sessions = self._sessions
        for entry in changes.updated:
            if entry.node_id == self._own_id:
                continue
            key = entry.x25519_public_key
            if key not in self.node_by_x25519:
                newcomers.append(entry)
            peer = sessions.add_peer(key, now)
            self.node_by_x25519[key] = entry.node_id
            held = self._indexed.get(entry.node_id)
            if held is not None:
                self._unindex(*held)
            addresses = (entry.ipv6.packed,) + ((entry.ipv4.packed,) if entry.ipv4 else ())
            self._indexed[entry.node_id] = (peer, addresses)
            for packed in addresses:
                self.peer_by_address[packed] = peer
        self.peer_by_address.update(self.leaf_peer_by_address)
        return newcomers, departed

    def _unindex(self, peer: Peer, addresses: tuple[bytes, ...]) -> None:
        for packed in addresses:
            if self.peer_by_address.get(packed) is peer:
                del self.peer_by_address[packed]

    def peer_for(self, raw_address: bytes) -> Peer | None:
        """The session peer for a destination: a node's address, a leaf, or a routed prefix."""
        peer = self.peer_by_address.get(raw_address)
        return peer if peer is not None else self.peer_for_prefix(raw_address)

    def peer_for_prefix(self, raw_address: bytes) -> Peer | None:
        """The slow path for prefixes routed by other nodes (leaves, subnets).

        The longest prefix wins; among several routers for it, the first in
        directory order that the routing table still reaches (when it dies, the
        next takes over); an exit's default route only for the chosen exit.
        """
        try:
            address = ipaddress.ip_address(raw_address)
        except ValueError:
            return None
        matches = sorted(  # the most specific prefix first, then directory order
            self.directory.prefix_owners(address), key=lambda pair: -pair[0].prefixlen
        )
        chosen_exit = self.exit_node()  # a name look-up: once per packet, not once per prefix
        owners = [
            owner
            for prefix, owner in matches
            if owner != self._own_id and (prefix.prefixlen or owner == chosen_exit)
        ]  # a default route (an exit node's) only to the exit this node chose
        chosen = next((n for n in owners if self.alive(n)), owners[0] if owners else None)
        entry = None if chosen is None else self.directory.get(chosen)
        return None if entry is None else self._sessions.peer(entry.x25519_public_key)

    def may_send_from(self, owner: bytes, source: bytes) -> bool:
        """Whether node `owner` may send from `source`: its own address or its leaves' prefix."""
        if self.directory.by_address.get(source) == owner:
            return True
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        if self.directory.by_address.get(address.packed) is not None:
            return False  # a node's own address, and not this owner's
        return any(node == owner for _, node in self.directory.prefix_owners(address))

    def leaf_may_send_from(self, peer_key: bytes, source: bytes) -> bool:
        leaf = self.leaf_by_x25519.get(peer_key)
        if leaf is None:
            return False
        address = ipaddress.ip_address(source)
        return any(address in prefix for prefix in leaf.addresses)
