"""The node's view of who is in the mesh: verified peer facts and their indexes.

Node records arrive from the DHT and from neighbours; once verified they are
kept here. The data plane needs one dict look-up per packet, so the
address index is keyed by the packed address bytes a packet carries
(`packet[16:20]` for IPv4, `packet[24:40]` for IPv6). Address and name
conflicts are settled with the pure rules in `addressing` and `names`, so
every node that holds the same records computes the same owners.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, ClaimOutcome, resolve_ipv4_claims
from gossipmesh.identity import x25519_public_from_ed25519
from gossipmesh.names import key_name, resolve_name_claims
from gossipmesh.records import NodeRecord

ROUTED_PREFIXES_EXTENSION = 1
"""Node-record extension: address prefixes the node routes for (its leaf WireGuard peers).

Value: a sequence of { u8 family (4|6) | u8 prefix length | 4s|16s address }.
"""

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


def encode_prefixes(prefixes: Iterable[Prefix]) -> bytes:
    return b"".join(bytes([p.version, p.prefixlen]) + p.network_address.packed for p in prefixes)


def decode_prefixes(value: bytes) -> tuple[Prefix, ...]:
    """Parse the extension; a malformed value yields no prefixes (it is signed, so only
    its owner could have written it, and ignoring it hurts only that owner)."""
    prefixes: list[Prefix] = []
    offset = 0
    while offset + 2 <= len(value):
        family, length = value[offset], value[offset + 1]
        size = 4 if family == 4 else 16 if family == 6 else 0
        raw = value[offset + 2 : offset + 2 + size]
        if not size or len(raw) != size:
            return ()
        try:
            prefix: Prefix = ipaddress.ip_network((raw, length))
        except ValueError:
            return ()
        prefixes.append(prefix)
        offset += 2 + size
    return tuple(prefixes) if offset == len(value) else ()


def routed_prefixes(record: NodeRecord) -> tuple[Prefix, ...]:
    for kind, value in record.extensions:
        if kind == ROUTED_PREFIXES_EXTENSION:
            return decode_prefixes(value)
    return ()


@dataclass(frozen=True)
class Resolved:
    """A peer with the address and name the conflict rules gave it."""

    record: NodeRecord
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
        self._records: dict[bytes, NodeRecord] = {}
        self._x25519_of: dict[bytes, bytes] = {}
        """Ed25519 -> X25519 public key: derived once per key, not on every rebuild."""
        self._resolved: dict[bytes, Resolved] = {}
        self._ipv4_outcomes: dict[bytes, ClaimOutcome] = {}
        self.by_address: dict[bytes, bytes] = {}
        """Packed IPv4 or IPv6 address -> node id: the data plane's look-up."""
        self.by_x25519: dict[bytes, bytes] = {}
        self.by_name: dict[str, bytes] = {}
        self.prefixes: list[tuple[Prefix, bytes]] = []

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Resolved]:
        return iter(self._resolved.values())

    def get(self, node_id: bytes) -> Resolved | None:
        return self._resolved.get(node_id)

    def record(self, node_id: bytes) -> NodeRecord | None:
        return self._records.get(node_id)

    def records(self) -> list[NodeRecord]:
        return list(self._records.values())

    def update(self, record: NodeRecord) -> bool:
        """Add or replace a node's verified record; True when anything changed.

        An older or equal sequence than the one held is ignored. The caller
        verifies (`records.validate`) before calling.
        """
        return self.update_many([record])

    def update_many(self, records: Iterable[NodeRecord]) -> bool:
        changed = False
        for record in records:
            node_id = record.node_id
            held = self._records.get(node_id)
            if held is None or held.sequence < record.sequence:
                self._records[node_id] = record
                changed = True
        if changed:
            self._rebuild()
        return changed

    def remove(self, node_id: bytes) -> bool:
        removed = self._records.pop(node_id, None)
        if removed is None:
            return False
        self._x25519_of.pop(removed.public_key, None)
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

    def _x25519(self, public_key: bytes) -> bytes:
        derived = self._x25519_of.get(public_key)
        if derived is None:
            derived = self._x25519_of[public_key] = x25519_public_from_ed25519(public_key)
        return derived

    def _rebuild(self) -> None:
        """Recompute owners of addresses and names; O(n log n), only on change."""
        records = self._records
        claims = [record.address_claim() for record in records.values()]
        self._ipv4_outcomes = dict(resolve_ipv4_claims(claims, self.network))
        names = resolve_name_claims(
            claim for record in records.values() if (claim := record.name_claim()) is not None
        )
        name_of = {node_id: name for name, node_id in names.items()}
        resolved: dict[bytes, Resolved] = {}
        by_address: dict[bytes, bytes] = {}
        by_x25519: dict[bytes, bytes] = {}
        by_name: dict[str, bytes] = dict(names)
        prefixes: list[tuple[Prefix, bytes]] = []
        for node_id, record in records.items():
            outcome = self._ipv4_outcomes[node_id]
            # A displaced node has no IPv4 until it republishes with its new
            # counter, so no packet is delivered to the wrong holder meanwhile.
            ipv4 = None if outcome.displaced else outcome.address
            entry = Resolved(
                record=record,
                node_id=node_id,
                x25519_public_key=self._x25519(record.public_key),
                ipv4=ipv4,
                ipv6=record.ipv6,
                name=name_of.get(node_id),
                key_name=key_name(node_id),
            )
            resolved[node_id] = entry
            if ipv4 is not None:
                by_address[ipv4.packed] = node_id
            by_address[entry.ipv6.packed] = node_id
            by_x25519[entry.x25519_public_key] = node_id
            by_name[entry.key_name] = node_id
            prefixes.extend((prefix, node_id) for prefix in routed_prefixes(record))
        self._resolved = resolved
        self.by_address = by_address
        self.by_x25519 = by_x25519
        self.by_name = by_name
        self.prefixes = prefixes
