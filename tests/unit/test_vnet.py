"""TUN offload helpers: checksums, TSO segmentation, GRO-style coalescing, the virtio header."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh import vnet


def reference_checksum_sum(data: bytes) -> int:
    """RFC 1071 the slow way: add 16-bit words with end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for index in range(0, len(data), 2):
        total += (data[index] << 8) | data[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def verifies(total: int) -> bool:
    """A receiver's check: the sum over everything, checksum included, is ones'-complement zero."""
    return total % 0xFFFF == 0


def tcp_packet(
    version: int, payload: bytes, *, sequence: int = 1000, flags: int = 0x18, options: bytes = b""
) -> bytes:
    tcp_length = 20 + len(options)
    tcp = (
        struct.pack(
            "!HHIIBBHHH", 40000, 5201, sequence, 77, (tcp_length // 4) << 4, flags, 512, 0, 0
        )
        + options
    )
    if version == 4:
        ip = bytearray(
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + tcp_length + len(payload),
                0x1234,
                0x4000,
                64,
                6,
                0,
                bytes([100, 64, 0, 1]),
                bytes([100, 64, 0, 2]),
            )
        )
        ip[10:12] = vnet.checksum_from_sum(vnet.internet_sum(ip)).to_bytes(2, "big")
        header = bytes(ip)
        addresses = header[12:20]
    else:
        source = bytes.fromhex("fd00000000000000000000000000000a")
        destination = bytes.fromhex("fd00000000000000000000000000000b")
        header = (
            struct.pack("!IHBB", 0x60000000, tcp_length + len(payload), 6, 64)
            + source
            + destination
        )
        addresses = source + destination
    body = bytearray(tcp + payload)
    total = vnet.internet_sum(addresses) + 6 + len(body) + vnet.internet_sum(body)
    body[16:18] = vnet.checksum_from_sum(total).to_bytes(2, "big")
    return header + bytes(body)


def tcp_verifies(packet: bytes) -> bool:
    version = packet[0] >> 4
    ip_length = 20 if version == 4 else 40
    addresses = packet[12:20] if version == 4 else packet[8:40]
    body = packet[ip_length:]
    return verifies(vnet.internet_sum(addresses) + 6 + len(body) + vnet.internet_sum(body))


@given(st.binary(max_size=3000))
def test_internet_sum_matches_rfc1071(data: bytes) -> None:
    expected = reference_checksum_sum(data)
    assert vnet.internet_sum(data) % 0xFFFF == expected % 0xFFFF


@given(st.binary(min_size=2, max_size=600).map(lambda b: b if len(b) % 2 == 0 else b + b"\x01"))
def test_a_checksum_makes_the_data_verify(data: bytes) -> None:
    check = vnet.checksum_from_sum(vnet.internet_sum(data))
    assert 1 <= check <= 0xFFFF  # never 0: UDP would read that as "no checksum"
    assert reference_checksum_sum(data + check.to_bytes(2, "big")) in (0xFFFF, 0)


@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    payload=st.binary(min_size=1, max_size=20000),
    mss=st.integers(min_value=1, max_value=1400),
    sequence=st.integers(min_value=0, max_value=2**32 - 1),
    flags=st.sampled_from([0x10, 0x18, 0x19, 0x90]),
    options=st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(range(8))]),
)
def test_segment_splits_into_valid_packets(
    version: int, payload: bytes, mss: int, sequence: int, flags: int, options: bytes
) -> None:
    packet = tcp_packet(version, payload, sequence=sequence, flags=flags, options=options)
    segments = vnet.segment(packet, mss)
    header_length = (20 if version == 4 else 40) + 20 + len(options)
    ip_length = 20 if version == 4 else 40
    assert b"".join(s[header_length:] for s in segments) == payload
    assert len(segments) == -(-len(payload) // mss)
    offset = 0
    for index, piece in enumerate(segments):
        assert len(piece) - header_length <= mss
        assert tcp_verifies(piece)
        if version == 4:
            assert int.from_bytes(piece[2:4], "big") == len(piece)
            assert verifies(vnet.internet_sum(piece[:20]))
            assert int.from_bytes(piece[4:6], "big") == (0x1234 + index) & 0xFFFF
        else:
            assert int.from_bytes(piece[4:6], "big") == len(piece) - 40
        assert (
            int.from_bytes(piece[ip_length + 4 : ip_length + 8], "big")
            == (sequence + offset) % 2**32
        )
        segment_flags = piece[ip_length + 13]
        last = index == len(segments) - 1
        assert bool(segment_flags & (vnet.TCP_FIN | vnet.TCP_PSH)) == (
            last and bool(flags & (vnet.TCP_FIN | vnet.TCP_PSH))
        )
        assert bool(segment_flags & vnet.TCP_CWR) == (index == 0 and bool(flags & vnet.TCP_CWR))
        offset += len(piece) - header_length


def joined(write: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in write)


@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    payload=st.binary(min_size=2, max_size=30000),
    mss=st.integers(min_value=500, max_value=1400),
)
def test_coalesce_undoes_segment(version: int, payload: bytes, mss: int) -> None:
    packet = tcp_packet(version, payload, flags=0x18)
    segments = vnet.segment(packet, mss)
    writes = vnet.coalesce(segments)
    if len(segments) == 1:
        assert writes == [[vnet.PLAIN_HEADER, segments[0]]]
        return
    assert len(writes) == 1
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = vnet.VNET_HDR.unpack(writes[0][0])
    ip_length = 20 if version == 4 else 40
    assert (flags, gso_size, csum_start, csum_offset) == (vnet.NEEDS_CSUM, mss, ip_length, 16)
    assert gso_type == (vnet.GSO_TCPV4 if version == 4 else vnet.GSO_TCPV6)
    assert hdr_len == ip_length + 20
    merged = bytearray(joined(writes[0][1:]))
    assert merged[hdr_len:] == payload
    assert merged[ip_length + 13] == 0x18  # PSH from the last segment
    # What the kernel does with NEEDS_CSUM: the result must be the original's valid checksum.
    vnet.complete_checksum(merged, csum_start, csum_offset)
    assert tcp_verifies(bytes(merged))
    if version == 4:
        assert int.from_bytes(merged[2:4], "big") == len(merged)
        assert verifies(vnet.internet_sum(merged[:20]))
    else:
        assert int.from_bytes(merged[4:6], "big") == len(merged) - 40


def test_coalesce_keeps_order_and_never_joins_across_gaps_or_flows() -> None:
    first = vnet.segment(tcp_packet(4, bytes(4000), flags=0x10), 1000)
    other_flow = tcp_packet(6, bytes(1000), flags=0x10)
    ping = bytes.fromhex("4500001c000000004001") + bytes(10)
    sequence = [first[0], first[1], first[3], other_flow, ping, first[2]]
    writes = vnet.coalesce(sequence)
    assert [joined(w) for w in writes][1:] == [vnet.PLAIN_HEADER + p for p in sequence[2:]]
    assert vnet.VNET_HDR.unpack(writes[0][0])[1] == vnet.GSO_TCPV4
    assert joined(writes[0][1:])[40:] == bytes(2000)


def test_a_short_segment_or_psh_ends_a_run() -> None:
    segments = vnet.segment(tcp_packet(4, bytes(2500), flags=0x18), 1000)  # 1000, 1000, 500+PSH
    follow = vnet.segment(tcp_packet(4, bytes(2000), sequence=3500, flags=0x10), 1000)
    writes = vnet.coalesce(segments + follow)
    assert len(writes) == 2
    assert len(joined(writes[0])) == vnet.VNET_HDR_SIZE + 40 + 2500


def test_packets_from_tun_turns_a_partial_ipv4_udp_checksum_into_none() -> None:
    payload = b"hello, mesh"
    udp_length = 8 + len(payload)
    ip = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + udp_length,
            1,
            0,
            64,
            17,
            0,
            bytes([100, 64, 0, 1]),
            bytes([100, 64, 0, 2]),
        )
    )
    pseudo = (vnet.internet_sum(ip[12:20]) + 17 + udp_length) % 0xFFFF
    udp = struct.pack("!HHHH", 53, 5353, udp_length, pseudo) + payload
    header = vnet.VNET_HDR.pack(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 20, 6)
    (packet,) = vnet.packets_from_tun(header + bytes(ip) + udp)
    assert packet[:26] == bytes(ip) + udp[:6]
    assert packet[26:28] == b"\x00\x00"  # RFC 768: no checksum
    assert packet[28:] == payload


def test_packets_from_tun_completes_a_partial_ipv6_udp_checksum() -> None:
    payload = b"hello, mesh"
    udp_length = 8 + len(payload)
    addresses = bytes.fromhex("fd00000000000000000000000000000afd00000000000000000000000000000b")
    ip = struct.pack("!IHBB", 0x60000000, udp_length, 17, 64) + addresses
    pseudo = (vnet.internet_sum(addresses) + 17 + udp_length) % 0xFFFF
    udp = struct.pack("!HHHH", 53, 5353, udp_length, pseudo) + payload
    header = vnet.VNET_HDR.pack(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 40, 6)
    (packet,) = vnet.packets_from_tun(header + ip + udp)
    total = vnet.internet_sum(addresses) + 17 + udp_length + vnet.internet_sum(packet[40:])
    assert verifies(total)
    assert packet[46:48] != b"\x00\x00"


def test_packets_from_tun_segments_a_super_packet_and_passes_plain_ones() -> None:
    packet = tcp_packet(6, bytes(3000))
    header = vnet.VNET_HDR.pack(vnet.NEEDS_CSUM, vnet.GSO_TCPV6, 60, 1200, 40, 16)
    assert [len(p) for p in vnet.packets_from_tun(header + packet)] == [1260, 1260, 660]
    assert vnet.packets_from_tun(vnet.PLAIN_HEADER + packet) == [packet]


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00" * 5,
        vnet.VNET_HDR.pack(0, vnet.GSO_UDP, 0, 1000, 0, 0) + bytes(100),
        vnet.VNET_HDR.pack(0, vnet.GSO_TCPV4, 0, 1000, 0, 0)
        + bytes.fromhex("4500001c00000000401100")
        + bytes(9),
        vnet.VNET_HDR.pack(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 30, 16) + bytes(40),
    ],
)
def test_packets_from_tun_refuses_what_it_cannot_honour(frame: bytes) -> None:
    with pytest.raises(vnet.OffloadError):
        vnet.packets_from_tun(frame)


def test_segments_of_another_connection_never_join_a_run() -> None:
    ours = vnet.segment(tcp_packet(4, bytes(2000), flags=0x10), 1000)
    theirs = bytearray(ours[1])
    theirs[20:22] = (40001).to_bytes(2, "big")  # another source port, same sequence numbers
    writes = vnet.coalesce([ours[0], bytes(theirs), ours[1]])
    assert [joined(w) for w in writes] == [
        vnet.PLAIN_HEADER + p for p in (ours[0], theirs, ours[1])
    ]
