"""ICMP answers the node writes back to its TUN device instead of dropping silently.

When a packet cannot be delivered (no route to the mesh address, or too big
for the path), the sender learns why at once, as from a router: ICMPv4
"destination unreachable" / "fragmentation needed", ICMPv6 "destination
unreachable" / "packet too big". The answer is addressed from the packet's
destination back to its source, carries as much of the offending packet as
RFC 792 / RFC 4443 allow, and is never sent about an ICMP error.
"""

from __future__ import annotations

import struct

IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
ICMPV4_UNREACHABLE = 3
ICMPV4_HOST_UNREACHABLE = 1
ICMPV4_FRAGMENTATION_NEEDED = 4
ICMPV6_UNREACHABLE = 1
ICMPV6_ADDRESS_UNREACHABLE = 3
ICMPV6_PACKET_TOO_BIG = 2
IPV6_MIN_MTU = 1280
_ICMPV4_ERROR_TYPES = {3, 4, 5, 11, 12}


def internet_checksum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_is_error_or_fragment(packet: bytes) -> bool:
    header_length = (packet[0] & 0x0F) * 4
    fragment_offset: int = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF
    if fragment_offset:
        return True  # only the first fragment may draw an ICMP error
    return (
        packet[9] == 1
        and len(packet) > header_length
        and packet[header_length] in _ICMPV4_ERROR_TYPES
    )


def _ipv4_error(packet: bytes, icmp_code: int, next_hop_mtu: int) -> bytes | None:
    if len(packet) < 20 or packet[0] >> 4 != 4 or _ipv4_is_error_or_fragment(packet):
        return None
    if packet[16] >= 224 or packet[12] >= 224 or packet[12] == 0:
        return None  # multicast or broadcast destination, or no real source (RFC 1812 4.3.2.7)
    header_length = (packet[0] & 0x0F) * 4
    quoted = packet[: header_length + 8]
    rest = next_hop_mtu if icmp_code == ICMPV4_FRAGMENTATION_NEEDED else 0
    icmp = struct.pack("!BBHI", ICMPV4_UNREACHABLE, icmp_code, 0, rest & 0xFFFF) + quoted
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    source, destination = packet[12:16], packet[16:20]
    total_length = 20 + len(icmp)
    header = IPV4_HEADER.pack(0x45, 0xC0, total_length, 0, 0, 64, 1, 0, destination, source)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + icmp


def _ipv6_error(packet: bytes, icmp_type: int, icmp_code: int, mtu: int) -> bytes | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    if packet[6] == 58 and len(packet) > 40 and packet[40] < 128:
        return None  # never answer an ICMPv6 error
    source, destination = packet[8:24], packet[24:40]
    if source == bytes(16) or source[0] == 0xFF:
        return None  # unspecified or multicast source: nobody to tell
    if destination[0] == 0xFF and icmp_type != ICMPV6_PACKET_TOO_BIG:
        return None  # RFC 4443 2.4(e): only Packet Too Big may answer multicast
    quoted = packet[: IPV6_MIN_MTU - 40 - 8]
    rest = mtu if icmp_type == ICMPV6_PACKET_TOO_BIG else 0
    body = struct.pack("!BBHI", icmp_type, icmp_code, 0, rest) + quoted
    pseudo = destination + source + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", internet_checksum(pseudo + body)) + body[4:]
    header = struct.pack("!IHBB", 6 << 28, len(body), 58, 64) + destination + source
    return header + body


def unreachable(packet: bytes) -> bytes | None:
    """The ICMP(v6) "destination unreachable" answer to `packet`, or None when none is due."""
    if not packet:
        return None
    if packet[0] >> 4 == 4:
        return _ipv4_error(packet, ICMPV4_HOST_UNREACHABLE, 0)
    return _ipv6_error(packet, ICMPV6_UNREACHABLE, ICMPV6_ADDRESS_UNREACHABLE, 0)


def too_big(packet: bytes, mtu: int) -> bytes | None:
    """The answer telling the sender to use at most `mtu` bytes, or None when none is due.

    IPv4 packets that allow fragmentation (DF clear) are not answered: the
    caller may fragment or drop them; Linux sets DF on TCP.
    """
    if not packet:
        return None
    if packet[0] >> 4 == 4:
        if len(packet) < 20 or not packet[6] & 0x40:
            return None
        return _ipv4_error(packet, ICMPV4_FRAGMENTATION_NEEDED, mtu)
    return _ipv6_error(packet, ICMPV6_PACKET_TOO_BIG, 0, max(mtu, IPV6_MIN_MTU))
