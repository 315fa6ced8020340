"""What the resolver needs to know about the mesh: suffix, address ranges, TTLs, sizes.

One frozen value shared by the answering core, the servers and the host
integration, so that they agree on the zone they serve.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gossipmesh.addressing import (
    DEFAULT_IPV4_NETWORK,
    IPV6_PREFIX,
    RESOLVER_IPV4,
    RESOLVER_IPV6,
)
from gossipmesh.names import normalize_label

DEFAULT_SUFFIX = "mesh"
DEFAULT_ANSWER_TTL = 60
"""Seconds clients may cache a mesh A/AAAA/PTR answer: short, as IPv4 can move on a collision."""
DEFAULT_NEGATIVE_TTL = 10
"""Seconds clients may cache "no such mesh name" (RFC 2308): short, so a node that just joined
becomes resolvable quickly."""
DEFAULT_UDP_PAYLOAD = 1232
"""EDNS0 UDP payload we advertise and honour at most (the DNS flag day 2020 value: no IP
fragmentation on any common path)."""
PLAIN_UDP_PAYLOAD = 512
"""RFC 1035: the most a client without EDNS0 can take over UDP."""


@dataclass(frozen=True)
class ResolverConfig:
    """The zone the resolver is authoritative for, and how it answers."""

    suffix: str = DEFAULT_SUFFIX
    ipv4_network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK
    ipv6_network: ipaddress.IPv6Network = IPV6_PREFIX
    resolver_ipv4: ipaddress.IPv4Address = RESOLVER_IPV4
    resolver_ipv6: ipaddress.IPv6Address = RESOLVER_IPV6
    answer_ttl: int = DEFAULT_ANSWER_TTL
    negative_ttl: int = DEFAULT_NEGATIVE_TTL
    udp_payload: int = DEFAULT_UDP_PAYLOAD
    soa_serial: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "suffix", normalize_label(self.suffix))
        if not 0 <= self.answer_ttl < 2**31 or not 0 <= self.negative_ttl < 2**31:
            raise ValueError("TTLs must be in [0, 2**31)")
        if not PLAIN_UDP_PAYLOAD <= self.udp_payload <= 65535:
            raise ValueError(f"udp_payload must be in [{PLAIN_UDP_PAYLOAD}, 65535]")
        if self.ipv6_network.prefixlen % 4:
            raise ValueError("the IPv6 mesh network must end on a nibble boundary")
