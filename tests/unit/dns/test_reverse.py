"""Which reverse names the resolver owns, for octet-aligned and unaligned CIDRs."""

from __future__ import annotations

import ipaddress

from gossipmesh.dns.config import ResolverConfig
from gossipmesh.dns.reverse import ReverseKind, classify_reverse, reverse_zones


def labels(name: str) -> tuple[bytes, ...]:
    return tuple(part.encode() for part in name.rstrip(".").split("."))


def test_default_zones_cover_the_cidr_exactly() -> None:
    zones = reverse_zones(ResolverConfig())
    assert zones[0] == "64.100.in-addr.arpa"
    assert zones[63] == "127.100.in-addr.arpa"
    assert zones[-1] == "d.f.ip6.arpa"
    assert len(zones) == 65


def test_aligned_and_small_cidrs() -> None:
    eight = ResolverConfig(ipv4_network=ipaddress.IPv4Network("10.0.0.0/8"))
    assert reverse_zones(eight)[:-1] == ["10.in-addr.arpa"]
    tiny = ResolverConfig(ipv4_network=ipaddress.IPv4Network("192.168.7.0/30"))
    assert reverse_zones(tiny)[:-1] == [f"{i}.7.168.192.in-addr.arpa" for i in range(4)]
    name = classify_reverse(labels("1.7.168.192.in-addr.arpa"), tiny)
    assert name is not None and name.kind is ReverseKind.ADDRESS
    assert classify_reverse(labels("9.7.168.192.in-addr.arpa"), tiny) is None


def test_classification() -> None:
    config = ResolverConfig()
    cases = {
        "2.1.64.100.in-addr.arpa": ReverseKind.ADDRESS,
        "1.64.100.in-addr.arpa": ReverseKind.EMPTY,
        "64.100.in-addr.arpa": ReverseKind.APEX,
        "01.1.64.100.in-addr.arpa": ReverseKind.INVALID,
        "256.1.64.100.in-addr.arpa": ReverseKind.INVALID,
        "d.f.ip6.arpa": ReverseKind.APEX,
        "1.d.f.ip6.arpa": ReverseKind.EMPTY,
        "g.d.f.ip6.arpa": ReverseKind.INVALID,
    }
    for name, kind in cases.items():
        found = classify_reverse(labels(name), config)
        assert found is not None and found.kind is kind, name
    for outside in ("100.in-addr.arpa", "2.1.63.100.in-addr.arpa", "0.0.c.f.ip6.arpa", "arpa"):
        assert classify_reverse(labels(outside), config) is None, outside


def test_full_ipv6_reverse_name_round_trips() -> None:
    address = ipaddress.IPv6Address("fd12:3456:789a::1")
    found = classify_reverse(labels(address.reverse_pointer), ResolverConfig())
    assert found is not None and found.address == address
