"""ICMP answers: layout, checksums, and the cases that must not be answered."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from gossipmesh.icmp import internet_checksum, too_big, unreachable

SRC4, DST4 = ipaddress.IPv4Address("100.64.0.1"), ipaddress.IPv4Address("100.64.0.2")
SRC6, DST6 = ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2")


def ipv4_packet(payload: bytes, dont_fragment: bool = True, protocol: int = 17) -> bytes:
    flags = 0x4000 if dont_fragment else 0
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        flags,
        64,
        protocol,
        0,
        SRC4.packed,
        DST4.packed,
    )
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + payload


def ipv6_packet(payload: bytes, next_header: int = 17) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
        + SRC6.packed
        + DST6.packed
        + payload
    )


def test_ipv4_fragmentation_needed() -> None:
    original = ipv4_packet(b"\x12\x34\x56\x78" * 400)
    answer = too_big(original, 1280)
    assert answer is not None
    assert internet_checksum(answer[:20]) == 0
    assert answer[12:16] == DST4.packed and answer[16:20] == SRC4.packed
    icmp = answer[20:]
    assert icmp[0] == 3 and icmp[1] == 4
    assert struct.unpack("!H", icmp[6:8])[0] == 1280
    assert internet_checksum(icmp) == 0
    assert icmp[8:] == original[:28]


def test_ipv4_without_df_is_not_answered_for_size() -> None:
    assert too_big(ipv4_packet(b"x" * 2000, dont_fragment=False), 1280) is None


def test_ipv6_packet_too_big_and_unreachable() -> None:
    original = ipv6_packet(b"y" * 1400)
    answer = too_big(original, 1300)
    assert answer is not None
    assert answer[8:24] == DST6.packed and answer[24:40] == SRC6.packed
    body = answer[40:]
    assert body[0] == 2 and struct.unpack("!I", body[4:8])[0] == 1300
    assert len(answer) <= 1280
    pseudo = DST6.packed + SRC6.packed + struct.pack("!I3xB", len(body), 58)
    assert internet_checksum(pseudo + body) == 0
    gone = unreachable(original)
    assert gone is not None and gone[40] == 1 and gone[41] == 3


def test_errors_about_errors_are_never_sent() -> None:
    icmp_error = bytes([3, 1, 0, 0, 0, 0, 0, 0]) + b"q" * 28
    assert unreachable(ipv4_packet(icmp_error, protocol=1)) is None
    icmpv6_error = bytes([1, 3, 0, 0, 0, 0, 0, 0]) + b"q" * 40
    assert unreachable(ipv6_packet(icmpv6_error, next_header=58)) is None
    echo_request = bytes([8, 0, 0, 0, 0, 1, 0, 1])
    assert unreachable(ipv4_packet(echo_request, protocol=1)) is not None


@given(st.binary(max_size=120))
def test_any_bytes_give_an_answer_or_none(data: bytes) -> None:
    for answer in (unreachable(data), too_big(data, 1280)):
        assert answer is None or answer[0] >> 4 in (4, 6)


def test_multicast_is_never_answered_unreachable() -> None:
    multicast6 = struct.pack("!IHBB", 6 << 28, 8, 58, 1) + SRC6.packed
    multicast6 += ipaddress.IPv6Address("ff02::16").packed + bytes([143, 0, 0, 0, 0, 0, 0, 0])
    assert unreachable(multicast6) is None
    broadcast = bytearray(ipv4_packet(b"x" * 8))
    broadcast[16:20] = bytes([255, 255, 255, 255])
    assert unreachable(bytes(broadcast)) is None
