"""Builders for the IP packets the filter tests feed in (checksums left zero: nobody checks)."""

from __future__ import annotations

import ipaddress
import itertools
import struct

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
DF = 0x4000
MF = 0x2000


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def ipv4(
    src: str,
    dst: str,
    protocol: int,
    payload: bytes,
    *,
    options: bytes = b"",
    fragment: int = DF,
    ident: int = 0x1234,
    total_length: int | None = None,
) -> bytes:
    """`fragment` is the flags-and-offset field: DF, MF | offset_in_8_byte_units, ..."""
    header_length = 20 + len(options)
    assert header_length % 4 == 0
    length = total_length if total_length is not None else header_length + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | header_length // 4,
        0,
        length,
        ident,
        fragment,
        64,
        protocol,
        0,
        packed(src),
        packed(dst),
    )
    return header + options + payload


def ipv6(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    *,
    extensions: list[tuple[int, bytes]] | None = None,
    payload_length: int | None = None,
) -> bytes:
    """`extensions`: (header type, body after the next-header byte) in order, outermost first."""
    chain = [*(extensions or []), (next_header, b"")]
    first = chain[0][0]
    body = b""
    for (_kind, content), (following, _) in itertools.pairwise(chain):
        body += bytes([following]) + content
    body += payload
    length = payload_length if payload_length is not None else len(body)
    return struct.pack("!IHBB", 6 << 28, length, first, 64) + packed(src) + packed(dst) + body


def options_header(length_units: int = 0) -> bytes:
    """A hop-by-hop or destination-options body (after the next-header byte): PadN."""
    size = (length_units + 1) * 8 - 1
    return bytes([length_units, 1, size - 3]) + bytes(size - 3)


def fragment_header(offset_units: int, more: bool, ident: int) -> bytes:
    return bytes([0]) + struct.pack("!HI", offset_units << 3 | int(more), ident)


def routing_header(segments_left: int) -> bytes:
    return bytes([0, 4, segments_left]) + bytes(4)


def tcp(sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(
    kind: int, code: int = 0, rest: bytes = b"\x00\x07\x00\x01", payload: bytes = b""
) -> bytes:
    return struct.pack("!BBH", kind, code, 0) + rest + payload


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return ipv4(src, dst, 6, tcp(sport, dport, flags, payload))


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return ipv4(src, dst, 17, udp(sport, dport, payload))


def tcp6(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return ipv6(src, dst, 6, tcp(sport, dport, flags, payload))


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return ipv6(src, dst, 17, udp(sport, dport, payload))


def echo4(src: str, dst: str, ident: int, reply: bool = False) -> bytes:
    return ipv4(src, dst, 1, icmp(0 if reply else 8, 0, struct.pack("!HH", ident, 1), b"ping"))


def echo6(src: str, dst: str, ident: int, reply: bool = False) -> bytes:
    return ipv6(src, dst, 58, icmp(129 if reply else 128, 0, struct.pack("!HH", ident, 1), b"ping"))


def icmp4_error(src: str, dst: str, quoted: bytes, kind: int = 3, code: int = 1) -> bytes:
    """An ICMPv4 error quoting the header and first 8 bytes beyond it, as RFC 792 says."""
    header_length = (quoted[0] & 0x0F) * 4
    return ipv4(src, dst, 1, icmp(kind, code, b"\x00" * 4, quoted[: header_length + 8]))


def icmp6_error(src: str, dst: str, quoted: bytes, kind: int = 2) -> bytes:
    return ipv6(src, dst, 58, icmp(kind, 0, struct.pack("!I", 1280), quoted))
