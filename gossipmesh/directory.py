"""The node's view of who is in the mesh: verified peer facts and their indexes.

Records arrive from the DHT and from peers; once verified they become
`PeerInfo` here. The data plane needs one dict look-up per packet, so the
address index is keyed by the packed address bytes a packet carries
(`packet[16:20]` for IPv4, `packet[24:40]` for IPv6). Address and name
conflicts are settled with the pure rules in `addressing` and `names`, so
every node that holds the same records computes the same owners.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gossipmesh.addressing import (
    DEFAULT_IPV4_NETWORK,
    AddressClaim,
    ClaimOutcome,
    ipv6_for,
    resolve_ipv4_claims,
)
from gossipmesh.identity import node_id_from_public_key, x25519_public_from_ed25519
from gossipmesh.names import NameClaim, key_name, resolve_name_claims


@dataclass(frozen=True)
class PeerInfo:
    """What one verified node record says about a node."""

    public_key: bytes
    ipv4_counter: int
    ipv4_held_since: int
    name: str | None
    name_claimed_since: int
    endpoints: tuple[tuple[str, int], ...]
    sequence: int
    extra_prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Addresses the node routes for (its leaf WireGuard peers)."""

    @property
    def node_id(self) -> bytes:
        return node_id_from_public_key(self.public_key)

    @property
    def x25519_public_key(self) -> bytes:
        return x25519_public_from_ed25519(self.public_key)

    @property
    def ipv6(self) -> ipaddress.IPv6Address:
        return ipv6_for(self.public_key)

    @property
    def key_name(self) -> str:
        return key_name(self.node_id)


@dataclass(frozen=True)
class Resolved:
    """A peer with the address and name the conflict rules gave it."""

    info: PeerInfo
    node_id: bytes
    x25519_public_key: bytes
    ipv4: ipaddress.IPv4Address | None
    """None while the node is displaced from its claimed IPv4 and has not yet moved."""
    ipv6: ipaddress.IPv6Address
    name: str | None
    """The human name it holds, or None if it claimed none or lost its claim."""
    key_name: str


class Directory:
    """All known peers (and this node), with the indexes the node needs."""

    def __init__(self, network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK) -> None:
        self.network = network
        self._infos: dict[bytes, PeerInfo] = {}
        self._resolved: dict[bytes, Resolved] = {}
        self._ipv4_outcomes: dict[bytes, ClaimOutcome] = {}
        self.by_address: dict[bytes, bytes] = {}
        """Packed IPv4 or IPv6 address -> node id: the data plane's look-up."""
        self.by_x25519: dict[bytes, bytes] = {}
        self.by_name: dict[str, bytes] = {}
        self.prefixes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, bytes]] = []

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[Resolved]:
        return iter(self._resolved.values())

    def get(self, node_id: bytes) -> Resolved | None:
        return self._resolved.get(node_id)

    def info(self, node_id: bytes) -> PeerInfo | None:
        return self._infos.get(node_id)

    def update(self, info: PeerInfo) -> bool:
        """Add or replace a node's facts; True when anything changed.

        An older or equal sequence than the one held is ignored.
        """
        node_id = info.node_id
        held = self._infos.get(node_id)
        if held is not None and held.sequence >= info.sequence:
            return False
        self._infos[node_id] = info
        self._rebuild()
        return True

    def update_many(self, infos: Iterable[PeerInfo]) -> bool:
        changed = False
        for info in infos:
            held = self._infos.get(info.node_id)
            if held is None or held.sequence < info.sequence:
                self._infos[info.node_id] = info
                changed = True
        if changed:
            self._rebuild()
        return changed

    def remove(self, node_id: bytes) -> bool:
        if self._infos.pop(node_id, None) is None:
            return False
        self._rebuild()
        return True

    def ipv4_outcome(self, node_id: bytes) -> ClaimOutcome | None:
        """What the collision rule decided for a node (displaced nodes must move)."""
        return self._ipv4_outcomes.get(node_id)

    def lookup_name(self, label: str) -> Resolved | None:
        """A node by human name or key name (case-insensitive)."""
        node_id = self.by_name.get(label.lower())
        return None if node_id is None else self._resolved.get(node_id)

    def lookup_address(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> Resolved | None:
        node_id = self.by_address.get(address.packed)
        if node_id is None:
            for prefix, owner in self.prefixes:
                if address.version == prefix.version and address in prefix:
                    node_id = owner
                    break
        return None if node_id is None else self._resolved.get(node_id)

    def _rebuild(self) -> None:
        """Recompute owners of addresses and names; O(n log n), only on change."""
        infos = self._infos
        claims = [
            AddressClaim(i.ipv4_held_since, node_id, i.public_key, i.ipv4_counter)
            for node_id, i in infos.items()
        ]
        self._ipv4_outcomes = dict(resolve_ipv4_claims(claims, self.network))
        names = resolve_name_claims(
            NameClaim(i.name_claimed_since, node_id, i.name)
            for node_id, i in infos.items()
            if i.name is not None
        )
        name_of = {node_id: name for name, node_id in names.items()}
        resolved: dict[bytes, Resolved] = {}
        by_address: dict[bytes, bytes] = {}
        by_x25519: dict[bytes, bytes] = {}
        by_name: dict[str, bytes] = dict(names)
        prefixes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, bytes]] = []
        for node_id, info in infos.items():
            outcome = self._ipv4_outcomes[node_id]
            # A displaced node has no IPv4 until it republishes with its new
            # counter, so no packet is delivered to the wrong holder meanwhile.
            ipv4 = None if outcome.displaced else outcome.address
            entry = Resolved(
                info=info,
                node_id=node_id,
                x25519_public_key=info.x25519_public_key,
                ipv4=ipv4,
                ipv6=info.ipv6,
                name=name_of.get(node_id),
                key_name=info.key_name,
            )
            resolved[node_id] = entry
            if ipv4 is not None:
                by_address[ipv4.packed] = node_id
            by_address[entry.ipv6.packed] = node_id
            by_x25519[entry.x25519_public_key] = node_id
            by_name[entry.key_name] = node_id
            prefixes.extend((prefix, node_id) for prefix in info.extra_prefixes)
        self._resolved = resolved
        self.by_address = by_address
        self.by_x25519 = by_x25519
        self.by_name = by_name
        self.prefixes = prefixes
