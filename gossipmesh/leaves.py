"""Leaf peers: stock WireGuard devices (a phone, a router) attached to one node.

A leaf speaks plain WireGuard to its node and gets mesh addresses; the node
advertises them in its signed record, so every node routes them to it. By
default a leaf's addresses are derived from its public key exactly as a
node's are, so they are stable and collide no more than nodes' do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, first_ipv4, ipv6_for
from gossipmesh.directory import Prefix
from gossipmesh.errors import LabelError
from gossipmesh.identity import decode_public_key
from gossipmesh.names import normalize_label


@dataclass(frozen=True)
class LeafPeer:
    name: str
    public_key: bytes
    """Its X25519 public key, as `wg pubkey` prints it."""
    addresses: tuple[Prefix, ...]


def default_leaf_addresses(
    public_key: bytes, network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK
) -> tuple[Prefix, ...]:
    _, ipv4 = first_ipv4(public_key, network)
    return (ipaddress.ip_network(f"{ipv4}/32"), ipaddress.ip_network(f"{ipv6_for(public_key)}/128"))


def parse_leaf(value: Any, network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK) -> LeafPeer:
    """One `[[leaf]]` table: name, public_key, and optional addresses (IPs or CIDRs)."""
    if not isinstance(value, Mapping):
        raise ValueError("each [[leaf]] must be a table with name and public_key")
    unknown = set(value) - {"name", "public_key", "addresses"}
    if unknown:
        raise ValueError(f"unknown leaf setting(s): {', '.join(sorted(unknown))}")
    try:
        name = normalize_label(str(value.get("name", "")))
    except LabelError as exc:
        raise ValueError(f"leaf name: {exc}") from None
    try:
        public_key = decode_public_key(str(value.get("public_key", "")))
    except ValueError as exc:
        raise ValueError(f"leaf {name!r}: public_key: {exc}") from None
    raw = value.get("addresses")
    if raw is None:
        return LeafPeer(name, public_key, default_leaf_addresses(public_key, network))
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"leaf {name!r}: addresses must be a non-empty list")
    addresses: list[Prefix] = []
    for item in raw:
        try:
            addresses.append(ipaddress.ip_network(str(item), strict=True))
        except ValueError as exc:
            raise ValueError(f"leaf {name!r}: address {item!r}: {exc}") from None
    return LeafPeer(name, public_key, tuple(addresses))
