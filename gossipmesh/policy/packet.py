"""What the filter needs from an IP packet, for everything the fast path does not take.

`parse_packet` reads IPv4 (with options) and IPv6 (walking extension
headers) and says what the packet is: TCP or UDP with ports, ICMP echo,
an ICMP error with the packet it quotes, other ICMP, another protocol, or
a later fragment with no transport header. It returns None for anything
malformed: a truncated or inconsistent header, a TCP fragment at offset 8
(RFC 1858's overlap attack), an IPv6 routing header that asks us to
forward the packet on, more extension headers than MAX_EXTENSION_HEADERS.
It never raises on any input.

Flow keys are byte strings built so that the fast path can slice them
straight from a packet: for TCP and UDP, source + destination + ports,
which is `packet[12:24]` for IPv4 without options and `packet[8:44]` for
IPv6 without extension headers.
"""

from __future__ import annotations

import struct
from typing import Final

TCP: Final = 6
UDP: Final = 17
ICMPV4: Final = 1
ICMPV6: Final = 58
TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_ACK: Final = 0x10

MAX_EXTENSION_HEADERS: Final = 8
ECHO_REQUEST: Final = {ICMPV4: 8, ICMPV6: 128}
ECHO_REPLY: Final = {ICMPV4: 0, ICMPV6: 129}
_ICMP_ERRORS: Final = {ICMPV4: frozenset({3, 11, 12}), ICMPV6: frozenset({1, 2, 3, 4})}
_ICMP_REFUSED: Final = {
    ICMPV4: frozenset({4, 5, 9, 10}),  # source quench, redirect, router advertisement/solicitation
    ICMPV6: frozenset({133, 134, 135, 136, 137}),  # router and neighbour discovery, redirect
}
"""ICMP that reconfigures a host's routing: never taken from the mesh, whatever the rules."""
_IPV4: Final = struct.Struct("!BxH2xHxB2x4s4s")
"""version/IHL, total length, flags/offset, protocol, source, destination."""
_IPV6_OPTIONS: Final = frozenset({0, 60})  # hop-by-hop, destination options
_IPV6_ROUTING: Final = 43
_IPV6_FRAGMENT: Final = 44
_IPV6_AH: Final = 51


class Kind:
    """What a packet is. Plain ints: an Enum member costs ~0.1 µs per use, too much here."""

    TRANSPORT: Final = 1
    """TCP or UDP: `ports` holds source and destination port."""
    ECHO: Final = 2
    """ICMP echo request or reply: `ports` holds the identifier."""
    ICMP_ERROR: Final = 3
    """Destination unreachable, packet too big, time exceeded, parameter problem: see `quoted`."""
    ICMP_OTHER: Final = 4
    ICMP_REFUSED: Final = 5
    OTHER: Final = 6
    """Another IP protocol: tracked by addresses alone."""
    FRAGMENT: Final = 7
    """A fragment after the first: no transport header; `fragment` says which datagram."""


class PacketInfo:
    """One parsed packet (read-only by convention: a plain class is faster to make)."""

    __slots__ = (
        "destination",
        "flags",
        "fragment",
        "icmp_type",
        "kind",
        "port",
        "ports",
        "protocol",
        "quoted",
        "source",
    )

    def __init__(
        self,
        kind: int,
        protocol: int,
        source: bytes,
        destination: bytes,
        ports: bytes = b"",
        flags: int = 0,
        icmp_type: int = -1,
        fragment: bytes | None = None,
        quoted: PacketInfo | None = None,
    ) -> None:
        self.kind = kind
        self.protocol = protocol
        self.source = source
        self.destination = destination
        self.ports = ports
        """Source and destination port (TCP, UDP) or the echo identifier; else empty."""
        self.port = int.from_bytes(ports[2:4], "big") if kind == Kind.TRANSPORT else 0
        """Destination port of TCP and UDP, 0 otherwise: what rules match ports on."""
        self.flags = flags
        """TCP flags; 0 for anything else."""
        self.icmp_type = icmp_type
        self.fragment = fragment
        """The datagram's fragment key when this is one fragment of it, else None."""
        self.quoted = quoted

    def __repr__(self) -> str:
        return f"PacketInfo(kind={self.kind}, protocol={self.protocol}, port={self.port})"


def _transport(
    protocol: int,
    src: bytes,
    dst: bytes,
    data: bytes,
    start: int,
    end: int,
    quoted: bool,
    key: bytes | None,
) -> PacketInfo | None:
    """The header at `start` of a first fragment or whole packet; `quoted`: inside an ICMP error."""
    if protocol == TCP:
        ports = data[start : start + 4]
        if quoted:
            return PacketInfo(Kind.TRANSPORT, TCP, src, dst, ports)
        if start + 20 > end or data[start + 12] >> 4 < 5:
            return None
        return PacketInfo(Kind.TRANSPORT, TCP, src, dst, ports, data[start + 13], -1, key)
    if protocol == UDP:
        return PacketInfo(Kind.TRANSPORT, UDP, src, dst, data[start : start + 4], 0, -1, key)
    icmp = ICMPV4 if len(src) == 4 else ICMPV6
    if protocol != icmp:
        return PacketInfo(Kind.OTHER, protocol, src, dst, b"", 0, -1, key)
    icmp_type = data[start]
    if icmp_type in (ECHO_REQUEST[icmp], ECHO_REPLY[icmp]):
        ident = data[start + 4 : start + 6]
        return PacketInfo(Kind.ECHO, icmp, src, dst, ident, 0, icmp_type, key)
    if quoted:
        return None  # an error is never sent about an error, nor about other ICMP
    if icmp_type in _ICMP_ERRORS[icmp]:
        inner = _quoted(data[start + 8 : end], len(src))
        if inner is None:
            return None
        return PacketInfo(Kind.ICMP_ERROR, icmp, src, dst, b"", 0, icmp_type, key, inner)
    kind = Kind.ICMP_REFUSED if icmp_type in _ICMP_REFUSED[icmp] else Kind.ICMP_OTHER
    return PacketInfo(kind, icmp, src, dst, b"", 0, icmp_type, key)


def _ipv4(data: bytes, quoted: bool) -> PacketInfo | None:
    if len(data) < 20:
        return None
    first, total, fragment_field, protocol, src, dst = _IPV4.unpack_from(data)
    header = (first & 0x0F) * 4
    end = len(data) if quoted else total
    if first >> 4 != 4 or header < 20 or end < header or end > len(data):
        return None
    key = None
    if fragment_field & 0x3FFF:
        offset = fragment_field & 0x1FFF
        if quoted and offset:
            return None  # a later fragment quoted: no ports to match
        key = src + dst + data[9:10] + data[4:6]
        if offset:
            if protocol == TCP and offset == 1:
                return None  # could rewrite the TCP flags of the first fragment (RFC 1858)
            return PacketInfo(Kind.FRAGMENT, protocol, src, dst, fragment=key)
    if header + 8 > end:
        return None  # every transport header this filter reads is at least 8 bytes
    return _transport(protocol, src, dst, data, header, end, quoted, key)


def _ipv6(data: bytes, quoted: bool) -> PacketInfo | None:
    if len(data) < 40 or data[0] >> 4 != 6:
        return None
    end = len(data) if quoted else 40 + int.from_bytes(data[4:6], "big")
    if end > len(data):
        return None
    src, dst = data[8:24], data[24:40]
    protocol = data[6]
    start = 40
    key = None
    for _ in range(MAX_EXTENSION_HEADERS + 1):
        if protocol not in _IPV6_OPTIONS and protocol not in (
            _IPV6_ROUTING,
            _IPV6_FRAGMENT,
            _IPV6_AH,
        ):
            break
        if start + 8 > end:
            return None
        following = data[start]
        if protocol == _IPV6_FRAGMENT:
            field = int.from_bytes(data[start + 2 : start + 4], "big")
            if field & 0xFFF9:  # an offset, or more fragments: not an atomic fragment
                if quoted and field & 0xFFF8:
                    return None
                key = src + dst + data[start + 4 : start + 8]
                if field & 0xFFF8:
                    return PacketInfo(Kind.FRAGMENT, following, src, dst, fragment=key)
            start += 8
        elif protocol == _IPV6_AH:
            start += (data[start + 1] + 2) * 4
        else:
            if protocol == _IPV6_ROUTING and data[start + 3]:
                return None  # segments left: we would be asked to forward it on
            start += (data[start + 1] + 1) * 8
        protocol = following
    else:
        return None
    if start + 8 > end:
        return None
    return _transport(protocol, src, dst, data, start, end, quoted, key)


def _quoted(data: bytes, address_size: int) -> PacketInfo | None:
    """The packet an ICMP error quotes: its header and at least 8 bytes beyond, maybe cut short."""
    return _ipv4(data, True) if address_size == 4 else _ipv6(data, True)


def parse_packet(packet: bytes) -> PacketInfo | None:
    """What `packet` is, or None when it is malformed; never raises."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        return _ipv4(packet, False)
    if version == 6:
        return _ipv6(packet, False)
    return None


def transport_key(info: PacketInfo) -> bytes:
    """The key of a TCP or UDP packet's direction: source + destination + ports."""
    return info.source + info.destination + info.ports


def reverse_transport_key(info: PacketInfo) -> bytes:
    """The key the replies to a TCP or UDP packet carry."""
    ports = info.ports
    return info.destination + info.source + ports[2:4] + ports[0:2]
