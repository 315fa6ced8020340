"""The node's view of who is in the mesh: verified peer facts and their indexes.

Node records arrive from the DHT and from neighbours; once verified they are
kept here. The data plane needs one dict look-up per packet, so the
address index is keyed by the packed address bytes a packet carries
(`packet[16:20]` for IPv4, `packet[24:40]` for IPv6). Address and name
conflicts are settled with the pure rules in `addressing` and `names`, so
every node that holds the same records computes the same owners.

Updates are incremental: a record change re-resolves only the claims on
its own IPv4 address and name (`addressing.ClaimIndex`, `names.NameIndex`)
and touches only the index entries of the nodes whose outcome moved, so a
node joining a mesh of n does O(n) work in all, not O(n^2). What changed
is collected for the node core (`take_changes`), which re-indexes its
data plane from that alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, ClaimIndex, ClaimOutcome, ipv6_for
from gossipmesh.identity import node_id_from_public_key, x25519_public_from_ed25519
from gossipmesh.names import NameIndex, key_name
from gossipmesh.records import NodeRecord

ROUTED_PREFIXES_EXTENSION = 1
"""Node-record extension: address prefixes the node routes for (its leaves, its subnets).

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


@dataclass(frozen=True)
class DirectoryChanges:
    """What moved since the last `Directory.take_changes`."""

    updated: list[Resolved]
    """Entries added or changed (a new record, address or name), in directory order."""
    removed: list[bytes]
    """Node ids no longer in the directory."""


@dataclass(frozen=True)
class _Derived:
    """What a public key determines: computed once per key, not once per record."""

    node_id: bytes
    x25519_public_key: bytes
    ipv6: ipaddress.IPv6Address
    key_name: str


class Directory:
    """All known peers (and this node), with the indexes the node needs."""

    def __init__(self, network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK) -> None:
        self.network = network
        self._records: dict[bytes, NodeRecord] = {}
        self._derived: dict[bytes, _Derived] = {}
        """Ed25519 public key -> its node id, X25519 key, IPv6 and key name."""
        self._resolved: dict[bytes, Resolved] = {}
        self._claims = ClaimIndex(network)
        self._names = NameIndex()
        self._position: dict[bytes, int] = {}
        """Node id -> when it entered the directory: sorts changes into directory order."""
        self._next_position = 0
        self._prefixes_of: dict[bytes, tuple[Prefix, ...]] = {}
        self._changed: dict[bytes, None] = {}
        self.by_address: dict[bytes, bytes] = {}
        """Packed IPv4 or IPv6 address -> node id: the data plane's look-up."""
        self.by_x25519: dict[bytes, bytes] = {}
        self.by_name: dict[str, bytes] = {}
        self.prefixes: list[tuple[Prefix, bytes]] = []
        self.approve_prefix: Callable[[NodeRecord, Prefix], bool] = lambda record, prefix: True
        """Whether a node may route a prefix it advertises (its certificate, issue 18)."""
        self.refused_prefixes: dict[bytes, tuple[Prefix, ...]] = {}
        """Node id -> prefixes it advertises that were not approved (shown by `routes`)."""

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
            derived = self._derive(record.public_key)
            node_id = derived.node_id
            held = self._records.get(node_id)
            if held is not None and held.sequence >= record.sequence:
                continue
            changed = True
            self._records[node_id] = record
            if held is None:
                self._position[node_id] = self._next_position
                self._next_position += 1
            touched = {node_id}
            touched |= self._claims.put(record.address_claim())
            touched |= self._names.put(node_id, record.name_claim())
            self._set_prefixes(node_id, self._approved(record))
            for node in sorted(touched):
                self._refresh(node)
        return changed

    def remove(self, node_id: bytes) -> bool:
        removed = self._records.pop(node_id, None)
        if removed is None:
            return False
        self._derived.pop(removed.public_key, None)
        del self._position[node_id]
        touched = self._claims.remove(node_id) | self._names.remove(node_id)
        self._set_prefixes(node_id, ())
        self.refused_prefixes.pop(node_id, None)
        entry = self._resolved.pop(node_id)
        self._unindex(entry)
        del self.by_x25519[entry.x25519_public_key]
        self._changed[node_id] = None
        for node in sorted(touched - {node_id}):
            self._refresh(node)
        return True

    def take_changes(self) -> DirectoryChanges:
        """Entries that changed and nodes removed since the last call (then forgotten)."""
        changed, self._changed = self._changed, {}
        present = sorted(
            (node_id for node_id in changed if node_id in self._resolved),
            key=self._position.__getitem__,
        )
        removed = [node_id for node_id in changed if node_id not in self._resolved]
        return DirectoryChanges([self._resolved[n] for n in present], removed)

    def ipv4_outcome(self, node_id: bytes) -> ClaimOutcome | None:
        """What the collision rule decided for a node (displaced nodes must move)."""
        return self._claims.outcomes.get(node_id)

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

    def prefix_owners(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> list[tuple[Prefix, bytes]]:
        """Every (prefix, node) routing `address`, in directory order (failover, exits)."""
        return [
            (prefix, owner)
            for prefix, owner in self.prefixes
            if address.version == prefix.version and address in prefix
        ]

    def _derive(self, public_key: bytes) -> _Derived:
        derived = self._derived.get(public_key)
        if derived is None:
            node_id = node_id_from_public_key(public_key)
            derived = self._derived[public_key] = _Derived(
                node_id,
                x25519_public_from_ed25519(public_key),
                ipv6_for(public_key),
                key_name(node_id),
            )
        return derived

    def _refresh(self, node_id: bytes) -> None:
        """Bring one node's entry and its index entries in line with the current outcomes."""
        record = self._records[node_id]
        derived = self._derive(record.public_key)
        outcome = self._claims.outcomes[node_id]
        # A displaced node has no IPv4 until it republishes with its new
        # counter, so no packet is delivered to the wrong holder meanwhile.
        entry = Resolved(
            record=record,
            node_id=node_id,
            x25519_public_key=derived.x25519_public_key,
            ipv4=None if outcome.displaced else outcome.address,
            ipv6=derived.ipv6,
            name=self._names.name_of(node_id),
            key_name=derived.key_name,
        )
        old = self._resolved.get(node_id)
        if old == entry:
            return
        if old is not None:
            self._unindex(old)
        self._resolved[node_id] = entry
        self._changed.pop(node_id, None)
        self._changed[node_id] = None
        if entry.ipv4 is not None:
            self.by_address[entry.ipv4.packed] = node_id
        self.by_address[entry.ipv6.packed] = node_id
        self.by_x25519[entry.x25519_public_key] = node_id
        if entry.name is not None:
            self.by_name[entry.name] = node_id
        self.by_name[entry.key_name] = node_id

    def _unindex(self, entry: Resolved) -> None:
        """Drop an entry's addresses and names, unless another node already took them over."""
        node_id = entry.node_id
        for packed in (entry.ipv6.packed, entry.ipv4.packed if entry.ipv4 else None):
            if packed is not None and self.by_address.get(packed) == node_id:
                del self.by_address[packed]
        for name in (entry.name, entry.key_name):
            if name is not None and self.by_name.get(name) == node_id:
                del self.by_name[name]

    def _approved(self, record: NodeRecord) -> tuple[Prefix, ...]:
        advertised = routed_prefixes(record)
        approved = tuple(p for p in advertised if self.approve_prefix(record, p))
        refused = tuple(p for p in advertised if p not in approved)
        if refused:
            self.refused_prefixes[record.node_id] = refused
        else:
            self.refused_prefixes.pop(record.node_id, None)
        return approved

    def _set_prefixes(self, node_id: bytes, prefixes: tuple[Prefix, ...]) -> None:
        """Routed prefixes, in directory order; rebuilt only when some node's set changes."""
        if self._prefixes_of.get(node_id, ()) == prefixes:
            return
        if prefixes:
            self._prefixes_of[node_id] = prefixes
        else:
            del self._prefixes_of[node_id]
        owners = sorted(self._prefixes_of, key=self._position.__getitem__)
        self.prefixes = [(prefix, owner) for owner in owners for prefix in self._prefixes_of[owner]]
