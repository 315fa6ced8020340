"""The slow path's packet parser: what each packet is, and None (never an exception) for junk."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.policy.packet import Kind, PacketInfo, parse_packet
from tests.unit.policy.packets import (
    ACK,
    MF,
    SYN,
    echo4,
    echo6,
    fragment_header,
    icmp,
    icmp4_error,
    icmp6_error,
    ipv4,
    ipv6,
    options_header,
    packed,
    routing_header,
    tcp,
    tcp4,
    tcp6,
    udp,
    udp4,
)

A4, B4 = "100.64.0.1", "100.64.0.2"
A6, B6 = "fd00::1", "fd00::2"


def parsed(packet: bytes) -> PacketInfo:
    info = parse_packet(packet)
    assert info is not None
    return info


def test_tcp_and_udp_ports_flags_and_the_key_the_fast_path_slices() -> None:
    packet = tcp4(A4, B4, 40000, 22, SYN | ACK)
    info = parsed(packet)
    assert (info.kind, info.protocol, info.port, info.flags) == (Kind.TRANSPORT, 6, 22, SYN | ACK)
    assert info.source + info.destination + info.ports == packet[12:24]
    six = tcp6(A6, B6, 40000, 443, ACK)
    info6 = parsed(six)
    assert (info6.kind, info6.port) == (Kind.TRANSPORT, 443)
    assert info6.source + info6.destination + info6.ports == six[8:44]
    assert parsed(udp4(A4, B4, 5000, 53)).port == 53


def test_ipv4_options_move_the_transport_header() -> None:
    packet = ipv4(A4, B4, 6, tcp(1234, 80, SYN), options=b"\x01" * 8)
    info = parsed(packet)
    assert (info.port, info.flags, info.ports) == (80, SYN, struct.pack("!HH", 1234, 80))


def test_ipv6_extension_headers_are_walked() -> None:
    packet = ipv6(
        A6,
        B6,
        17,
        udp(7, 53),
        extensions=[(0, options_header()), (43, routing_header(0)), (60, options_header(1))],
    )
    info = parsed(packet)
    assert (info.kind, info.protocol, info.port) == (Kind.TRANSPORT, 17, 53)
    assert info.fragment is None


def test_echo_and_other_icmp() -> None:
    request = parsed(echo4(A4, B4, 77))
    assert (request.kind, request.icmp_type, request.ports) == (Kind.ECHO, 8, b"\x00\x4d")
    assert parsed(echo6(A6, B6, 77, reply=True)).icmp_type == 129
    assert parsed(ipv4(A4, B4, 1, icmp(13))).kind == Kind.ICMP_OTHER  # timestamp
    assert parsed(ipv4(A4, B4, 1, icmp(5))).kind == Kind.ICMP_REFUSED  # redirect
    assert parsed(ipv6(A6, B6, 58, icmp(134))).kind == Kind.ICMP_REFUSED  # router advertisement
    assert parsed(ipv4(A4, B4, 47, bytes(8))).kind == Kind.OTHER  # GRE
    assert parsed(ipv4(A4, B4, 58, bytes(8))).kind == Kind.OTHER  # ICMPv6 number inside IPv4


def test_icmp_errors_carry_the_quoted_packet() -> None:
    original = udp4(B4, A4, 33434, 53)
    info = parsed(icmp4_error(A4, B4, original, kind=11))
    assert info.kind == Kind.ICMP_ERROR and info.quoted is not None
    assert (info.quoted.source, info.quoted.destination) == (packed(B4), packed(A4))
    assert info.quoted.port == 53
    six = parsed(icmp6_error(A6, B6, tcp6(B6, A6, 5555, 22, ACK)))
    assert six.kind == Kind.ICMP_ERROR and six.quoted is not None and six.quoted.port == 22


def test_an_error_about_an_error_or_a_later_fragment_is_malformed() -> None:
    inner = icmp4_error(B4, A4, udp4(A4, B4, 1, 2))
    assert parse_packet(icmp4_error(A4, B4, inner)) is None
    later = ipv4(B4, A4, 17, bytes(16), fragment=3)
    assert parse_packet(icmp4_error(A4, B4, later)) is None


def test_fragments() -> None:
    first = parsed(ipv4(A4, B4, 17, udp(1, 53, bytes(100)), fragment=MF, ident=9))
    assert first.kind == Kind.TRANSPORT and first.port == 53
    later = parsed(ipv4(A4, B4, 17, bytes(40), fragment=185, ident=9))
    assert later.kind == Kind.FRAGMENT
    assert later.fragment == first.fragment is not None
    other = parsed(ipv4(A4, B4, 17, bytes(40), fragment=185, ident=10))
    assert other.fragment != first.fragment
    last_byte = parsed(ipv4(A4, B4, 17, b"x", fragment=2))  # a final fragment may be tiny
    assert last_byte.kind == Kind.FRAGMENT


def test_ipv6_fragments_and_atomic_fragments() -> None:
    first = parsed(
        ipv6(A6, B6, 17, udp(1, 53, bytes(64)), extensions=[(44, fragment_header(0, True, 5))])
    )
    assert first.kind == Kind.TRANSPORT and first.port == 53 and first.fragment is not None
    later = parsed(ipv6(A6, B6, 17, bytes(64), extensions=[(44, fragment_header(9, False, 5))]))
    assert later.kind == Kind.FRAGMENT and later.fragment == first.fragment
    atomic = parsed(
        ipv6(A6, B6, 6, tcp(1, 22, SYN), extensions=[(44, fragment_header(0, False, 5))])
    )
    assert atomic.kind == Kind.TRANSPORT and atomic.fragment is None and atomic.flags == SYN


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45",
        bytes(19),
        b"\x15" + bytes(40),  # version 1
        ipv4(A4, B4, 6, tcp(1, 2, SYN))[:30],  # truncated TCP header
        b"\x44" + ipv4(A4, B4, 6, tcp(1, 2, SYN))[1:],  # IHL 4: shorter than the fixed header
        b"\x4f" + ipv4(A4, B4, 6, tcp(1, 2, SYN))[1:],  # IHL 15: header past the transport
        ipv4(A4, B4, 6, tcp(1, 2, SYN), total_length=19),
        ipv4(A4, B4, 6, tcp(1, 2, SYN), total_length=200),  # longer than the bytes we have
        ipv4(A4, B4, 17, udp(1, 2, b""), total_length=27),  # UDP header cut by total length
        ipv4(A4, B4, 6, bytes(30), fragment=1),  # RFC 1858: rewrites the first fragment's flags
        ipv4(A4, B4, 6, tcp(1, 2, SYN)[:12] + b"\x40" + tcp(1, 2, SYN)[13:]),  # data offset 4
        ipv4(A4, B4, 1, icmp(3, 1, b"\x00" * 4, b"\x45" + bytes(10))),  # quote too short
        ipv4(A4, B4, 1, icmp(8)[:6]),
        tcp6(A6, B6, 1, 2, SYN)[:50],
        ipv6(A6, B6, 6, tcp(1, 2, SYN), payload_length=500),
        ipv6(A6, B6, 17, udp(1, 2), extensions=[(43, routing_header(2))]),  # segments left
        ipv6(A6, B6, 17, udp(1, 2), extensions=[(60, options_header())] * 9),  # too many
        ipv6(A6, B6, 17, b"", extensions=[(60, options_header(30))]),  # header past the end
        icmp6_error(A6, B6, b"\x60" + bytes(20)),
    ],
)
def test_malformed_packets_are_none(packet: bytes) -> None:
    assert parse_packet(packet) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data: bytes) -> None:
    info = parse_packet(data)
    assert info is None or isinstance(info, PacketInfo)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(
        [
            tcp4(A4, B4, 1, 2, SYN),
            tcp6(A6, B6, 1, 2, SYN),
            icmp4_error(A4, B4, udp4(B4, A4, 1, 2)),
            icmp6_error(A6, B6, udp4(B4, A4, 1, 2)),
            ipv6(A6, B6, 17, udp(1, 2), extensions=[(44, fragment_header(0, True, 1))]),
        ]
    ),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6),
    st.integers(0, 90),
)
def test_mutated_and_truncated_packets_never_raise(
    packet: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(packet)
    for index, value in flips:
        if index < len(data):
            data[index] = value
    info = parse_packet(bytes(data[: len(data) - cut]))
    assert info is None or isinstance(info, PacketInfo)
