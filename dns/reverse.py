"""Reverse names (in-addr.arpa, ip6.arpa) that fall inside the mesh's address ranges.

The resolver is authoritative for the reverse zones that cover the mesh
networks exactly: for an IPv4 CIDR not on an octet boundary (100.64.0.0/10)
that is one zone per enclosing octet prefix (64.100.in-addr.arpa up to
127.100.in-addr.arpa); for fd00::/8 it is d.f.ip6.arpa. Everything else
under .arpa is forwarded upstream.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from gossipmesh.dns.config import ResolverConfig

IPV4_ARPA = (b"in-addr", b"arpa")
IPV6_ARPA = (b"ip6", b"arpa")
_HEX = frozenset(b"0123456789abcdef")


class ReverseKind(enum.Enum):
    APEX = "apex"
    """The zone's own name: SOA and NS live here."""
    ADDRESS = "address"
    """A full address: a PTR if a node holds it."""
    EMPTY = "empty"
    """A partial address inside the zone: exists, holds no records (NODATA)."""
    INVALID = "invalid"
    """Inside the zone but cannot be an address (NXDOMAIN)."""


@dataclass(frozen=True)
class ReverseName:
    kind: ReverseKind
    zone: tuple[bytes, ...]
    """The labels of the zone apex this name falls in."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


def _ipv4_zone_octets(network: ipaddress.IPv4Network) -> int:
    return max(1, -(-network.prefixlen // 8))


def _octet(label: bytes) -> int | None:
    if not label.isdigit() or len(label) > 3 or (len(label) > 1 and label[0] == ord("0")):
        return None
    value = int(label)
    return value if value <= 255 else None


def classify_reverse(labels: tuple[bytes, ...], config: ResolverConfig) -> ReverseName | None:
    """Where a lower-cased name falls among the mesh reverse zones; None if outside them."""
    if labels[-2:] == IPV4_ARPA:
        return _classify_ipv4(labels[:-2], config.ipv4_network)
    if labels[-2:] == IPV6_ARPA:
        return _classify_ipv6(labels[:-2], config.ipv6_network)
    return None


def _classify_ipv4(
    reversed_octets: tuple[bytes, ...], network: ipaddress.IPv4Network
) -> ReverseName | None:
    zone_octets = _ipv4_zone_octets(network)
    if len(reversed_octets) < zone_octets:
        return None
    forward = reversed_octets[::-1]
    prefix: list[int] = []
    for label in forward[:zone_octets]:
        octet = _octet(label)
        if octet is None:
            return None
        prefix.append(octet)
    zone_net = ipaddress.IPv4Network(
        (bytes([*prefix, *([0] * (4 - zone_octets))]), 8 * zone_octets)
    )
    if not zone_net.subnet_of(network):
        return None
    zone = (*reversed_octets[len(reversed_octets) - zone_octets :], *IPV4_ARPA)
    if len(forward) == zone_octets and zone_octets < 4:
        return ReverseName(ReverseKind.APEX, zone)
    octets = [_octet(label) for label in forward]
    if len(forward) > 4 or any(octet is None for octet in octets):
        return ReverseName(ReverseKind.INVALID, zone)
    if len(forward) < 4:
        return ReverseName(ReverseKind.EMPTY, zone)
    address = ipaddress.IPv4Address(bytes(octet or 0 for octet in octets))
    return ReverseName(ReverseKind.ADDRESS, zone, address)


def _classify_ipv6(
    reversed_nibbles: tuple[bytes, ...], network: ipaddress.IPv6Network
) -> ReverseName | None:
    zone_nibbles = max(1, network.prefixlen // 4)
    if len(reversed_nibbles) < zone_nibbles:
        return None
    forward = reversed_nibbles[::-1]
    if not all(_is_nibble(label) for label in forward[:zone_nibbles]):
        return None
    network_nibbles = network.network_address.exploded.replace(":", "")[:zone_nibbles]
    if b"".join(forward[:zone_nibbles]).decode() != network_nibbles:
        return None
    zone = (*reversed_nibbles[len(reversed_nibbles) - zone_nibbles :], *IPV6_ARPA)
    if len(forward) == zone_nibbles:
        return ReverseName(ReverseKind.APEX, zone)
    if len(forward) > 32 or not all(_is_nibble(label) for label in forward):
        return ReverseName(ReverseKind.INVALID, zone)
    if len(forward) < 32:
        return ReverseName(ReverseKind.EMPTY, zone)
    address = ipaddress.IPv6Address(int(b"".join(forward), 16))
    return ReverseName(ReverseKind.ADDRESS, zone, address)


def _is_nibble(label: bytes) -> bool:
    return len(label) == 1 and label[0] in _HEX


def reverse_zones(config: ResolverConfig) -> list[str]:
    """The reverse zones the resolver serves, as dotted names (for split-DNS routing)."""
    network = config.ipv4_network
    zone_octets = _ipv4_zone_octets(network)
    zone_prefix = 8 * zone_octets
    zones: list[str] = []
    subnets = (
        [network] if network.prefixlen >= zone_prefix else network.subnets(new_prefix=zone_prefix)
    )
    for subnet in subnets:
        octets = subnet.network_address.packed[:zone_octets]
        zones.append(".".join(str(octet) for octet in reversed(octets)) + ".in-addr.arpa")
    nibbles = config.ipv6_network.network_address.exploded.replace(":", "")
    zones.append(
        ".".join(reversed(nibbles[: max(1, config.ipv6_network.prefixlen // 4)])) + ".ip6.arpa"
    )
    return zones
