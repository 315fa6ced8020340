"""Which node gets a packet for a routed address: longest prefix, a live router, the chosen exit."""

from __future__ import annotations

import ipaddress

from gossipmesh.directory import ROUTED_PREFIXES_EXTENSION, Directory, encode_prefixes
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.node.address_map import AddressMap
from gossipmesh.records import NodeRecord
from gossipmesh.session.manager import SessionManager

NOW = 1_800_000_000
OWN = Identity.from_seed(b"0" * 32)


def _router(seed: bytes, *prefixes: str, name: str) -> NodeRecord:
    identity = Identity.from_seed(seed * 32)
    value = encode_prefixes(ipaddress.ip_network(p) for p in prefixes)
    return NodeRecord(
        public_key=identity.public_key, sequence=1, issued_at=NOW, expires_at=NOW + 600,
        name=name, name_claimed_since=NOW, extensions=((ROUTED_PREFIXES_EXTENSION, value),),
    ).signed(identity)  # fmt: skip


def _map(*records: NodeRecord) -> AddressMap:
    directory = Directory()
    sessions = SessionManager.for_identity(OWN, NetworkSecret(b"s" * 32))
    addresses = AddressMap(directory, sessions, OWN.node_id)
    directory.update_many(records)
    addresses.rebuild(directory.take_changes(), 0.0)
    return addresses


def _chosen(addresses: AddressMap, address: str) -> bytes | None:
    peer = addresses.peer_for_prefix(ipaddress.ip_address(address).packed)
    return None if peer is None else addresses.node_by_x25519[peer.public_key]


def test_the_longest_prefix_wins_over_an_exit_and_a_dead_router_is_skipped() -> None:
    exit_node = _router(b"e", "0.0.0.0/0", name="exit")
    first = _router(b"a", "10.1.0.0/16", name="wide")
    lan = _router(b"b", "10.1.2.0/24", name="lan")
    backup = _router(b"c", "10.1.2.0/24", name="backup")
    addresses = _map(exit_node, first, lan, backup)
    addresses.exit_node = lambda: exit_node.node_id
    assert _chosen(addresses, "10.1.2.9") == lan.node_id  # /24 beats /16 and /0
    assert _chosen(addresses, "10.1.9.9") == first.node_id
    assert _chosen(addresses, "192.0.2.7") == exit_node.node_id
    addresses.alive = lambda node_id: node_id != lan.node_id
    assert _chosen(addresses, "10.1.2.9") == backup.node_id  # failover to the other router


def test_an_exit_is_used_only_when_chosen() -> None:
    exit_node = _router(b"e", "0.0.0.0/0", name="exit")
    addresses = _map(exit_node)
    assert _chosen(addresses, "192.0.2.7") is None
    addresses.exit_node = lambda: exit_node.node_id
    assert _chosen(addresses, "192.0.2.7") == exit_node.node_id
