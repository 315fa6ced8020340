"""check_tun_frame: what a peer may hand our kernel whole over a stream link.

Accepted: what our own TUN reads produce (and what `vnet.coalesce` writes).
Rejected: every other virtio_net_hdr, so a peer cannot make the kernel
segment or checksum anything but a TCP packet of the packet's own IP version.
"""

from __future__ import annotations

import struct

import pytest

from gossipmesh import vnet
from gossipmesh.vnet import (
    DATA_VALID,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    NEEDS_CSUM,
    OffloadError,
    check_tun_frame,
)

SOURCE4, DESTINATION4 = bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2])
SOURCE6 = bytes.fromhex("fd000000000000000000000000000001")
DESTINATION6 = bytes.fromhex("fd000000000000000000000000000002")


def ip_header(version: int, protocol: int, payload_length: int) -> bytes:
    if version == 4:
        header = bytearray(
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + payload_length,
                7,
                0x4000,
                64,
                protocol,
                0,
                SOURCE4,
                DESTINATION4,
            )
        )
        header[10:12] = vnet.checksum_from_sum(vnet.internet_sum(header)).to_bytes(2, "big")
        return bytes(header)
    return struct.pack(
        "!IHBB16s16s", 0x60000000, payload_length, protocol, 64, SOURCE6, DESTINATION6
    )


def tcp_packet(version: int, payload: bytes, *, flags: int = 0x10) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 1, 5 << 4, flags, 512, 0, 0)
    return ip_header(version, vnet.TCP, len(tcp) + len(payload)) + tcp + payload


def udp_packet(version: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0)
    return ip_header(version, vnet.UDP, len(udp) + len(payload)) + udp + payload


def header(
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    return vnet.VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def ip_length(version: int) -> int:
    return 20 if version == 4 else 40


def gso_frame(version: int, payload_size: int = 4000, *, ecn: bool = False) -> bytes:
    """A TCP super-packet as the TUN hands it over (TSO: NEEDS_CSUM, MSS in gso_size)."""
    packet = tcp_packet(version, bytes(range(256)) * (payload_size // 256) + b"x")
    kind = (GSO_TCPV4 if version == 4 else GSO_TCPV6) | (GSO_ECN if ecn else 0)
    start = ip_length(version)
    return header(NEEDS_CSUM, kind, start + 20, 1400, start, 16) + packet


# --- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_plain_packets_are_accepted(version: int) -> None:
    for packet in (
        tcp_packet(version, b""),
        tcp_packet(version, b"x" * 1000),
        udp_packet(version, b"q"),
    ):
        assert check_tun_frame(vnet.PLAIN_HEADER + packet) == version


def test_a_memoryview_is_accepted_as_bytes_are() -> None:
    frame = gso_frame(4)
    assert check_tun_frame(memoryview(frame)) == 4
    assert check_tun_frame(memoryview(b"xx" + frame)[2:]) == 4


@pytest.mark.parametrize("version", [4, 6])
def test_needs_csum_tcp_and_udp_are_accepted(version: int) -> None:
    start = ip_length(version)
    tcp = header(NEEDS_CSUM, csum_start=start, csum_offset=16) + tcp_packet(version, b"data")
    udp = header(NEEDS_CSUM, csum_start=start, csum_offset=6) + udp_packet(version, b"data")
    assert check_tun_frame(tcp) == version
    assert check_tun_frame(udp) == version


def test_data_valid_is_accepted() -> None:
    assert check_tun_frame(header(DATA_VALID) + udp_packet(4, b"")) == 4


def test_the_checksum_field_may_end_at_the_packets_last_byte() -> None:
    packet = udp_packet(4, b"")  # 28 bytes
    assert check_tun_frame(header(NEEDS_CSUM, csum_start=20, csum_offset=6) + packet) == 4
    assert check_tun_frame(header(NEEDS_CSUM, csum_start=26, csum_offset=0) + packet) == 4


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("ecn", [False, True])
def test_tcp_segmentation_of_the_packets_own_version_is_accepted(version: int, ecn: bool) -> None:
    frame = gso_frame(version, ecn=ecn)
    assert check_tun_frame(frame) == version
    # What the kernel would do with it is what vnet.segment does: it must work.
    segments = vnet.packets_from_tun(frame)
    assert len(segments) == 3
    for segment in segments:
        assert check_tun_frame(vnet.PLAIN_HEADER + segment) == version


@pytest.mark.parametrize("version", [4, 6])
def test_super_packets_from_coalesce_are_accepted(version: int) -> None:
    """vnet.coalesce builds the frames the receiving side writes: the same form must pass."""
    packet = tcp_packet(version, bytes(range(200)) * 40)
    writes = vnet.coalesce(vnet.segment(packet, 1000))
    assert len(writes) == 1
    frame = b"".join(bytes(part) for part in writes[0])
    flags, gso_type, *_ = vnet.VNET_HDR.unpack_from(frame)
    assert flags == NEEDS_CSUM and gso_type in (GSO_TCPV4, GSO_TCPV6)
    assert check_tun_frame(frame) == version


# --- rejected ------------------------------------------------------------------------------


def rejected(frame: bytes) -> None:
    with pytest.raises(OffloadError):
        check_tun_frame(frame)


@pytest.mark.parametrize("flags", [0x04, 0x08, 0x80, 0xFF, NEEDS_CSUM | 0x04])
def test_unknown_flags_are_rejected(flags: int) -> None:
    rejected(header(flags, csum_start=20, csum_offset=16) + tcp_packet(4, b""))


@pytest.mark.parametrize("ecn", [0, GSO_ECN])
def test_udp_segmentation_is_rejected(ecn: int) -> None:
    rejected(header(NEEDS_CSUM, GSO_UDP | ecn, 28, 1400, 20, 6) + udp_packet(4, bytes(3000)))


def test_tcpv4_segmentation_of_an_ipv6_packet_is_rejected() -> None:
    rejected(header(NEEDS_CSUM, GSO_TCPV4, 60, 1400, 40, 16) + tcp_packet(6, bytes(3000)))


def test_tcpv6_segmentation_of_an_ipv4_packet_is_rejected() -> None:
    rejected(header(NEEDS_CSUM, GSO_TCPV6, 40, 1400, 20, 16) + tcp_packet(4, bytes(3000)))


@pytest.mark.parametrize("version", [4, 6])
def test_tcp_segmentation_of_a_udp_packet_is_rejected(version: int) -> None:
    kind = GSO_TCPV4 if version == 4 else GSO_TCPV6
    start = ip_length(version)
    rejected(header(NEEDS_CSUM, kind, start + 8, 1400, start, 6) + udp_packet(version, bytes(3000)))


@pytest.mark.parametrize("gso_type", [2, 5, 0x41, 0x7F, 0xFF, GSO_ECN])
def test_unknown_segmentation_types_are_rejected(gso_type: int) -> None:
    """GSO_ECN alone names no segmentation: the kernel refuses it (EINVAL), so do we."""
    rejected(header(NEEDS_CSUM, gso_type, 40, 1400, 20, 16) + tcp_packet(4, bytes(3000)))


def test_segmentation_without_a_checksum_request_is_rejected() -> None:
    frame = bytearray(gso_frame(4))
    frame[0] = 0
    rejected(bytes(frame))
    frame[0] = DATA_VALID
    rejected(bytes(frame))


def test_segmentation_with_gso_size_zero_is_rejected() -> None:
    frame = bytearray(gso_frame(4))
    frame[4:6] = b"\x00\x00"
    rejected(bytes(frame))


def test_segmentation_headers_longer_than_the_packet_are_rejected() -> None:
    frame = gso_frame(4)
    packet_size = len(frame) - 10
    at_end = bytearray(frame)
    at_end[2:4] = packet_size.to_bytes(2, "little")
    assert check_tun_frame(bytes(at_end)) == 4
    beyond = bytearray(frame)
    beyond[2:4] = (packet_size + 1).to_bytes(2, "little")
    rejected(bytes(beyond))


@pytest.mark.parametrize(
    "csum_start, csum_offset",
    [(27, 0), (20, 7), (0, 27), (28, 0), (0xFFFF, 0xFFFF), (20, 0xFFFF)],
)
def test_a_checksum_field_beyond_the_packet_is_rejected(csum_start: int, csum_offset: int) -> None:
    rejected(
        header(NEEDS_CSUM, csum_start=csum_start, csum_offset=csum_offset) + udp_packet(4, b"")
    )


def test_a_checksum_field_beyond_the_packet_is_rejected_for_segmentation_too() -> None:
    frame = bytearray(gso_frame(6))
    frame[6:8] = (len(frame) - 10).to_bytes(2, "little")  # csum_start at the very end
    rejected(bytes(frame))


@pytest.mark.parametrize("size", [0, 1, 10, 29])
def test_frames_shorter_than_a_header_and_an_ipv4_header_are_rejected(size: int) -> None:
    rejected((vnet.PLAIN_HEADER + tcp_packet(4, b""))[:size])


def test_the_shortest_ipv4_frame_is_accepted() -> None:
    assert check_tun_frame(vnet.PLAIN_HEADER + ip_header(4, 253, 0)) == 4


@pytest.mark.parametrize("size", [20, 28, 39])
def test_ipv6_frames_shorter_than_an_ipv6_header_are_rejected(size: int) -> None:
    """Else the receiver reads its addresses past the packet's end (a 4-byte 'destination')."""
    rejected(vnet.PLAIN_HEADER + ip_header(6, 59, 0)[:size])


def test_the_shortest_ipv6_frame_is_accepted() -> None:
    assert check_tun_frame(vnet.PLAIN_HEADER + ip_header(6, 59, 0)) == 6


@pytest.mark.parametrize("first_byte", [0x00, 0x15, 0x50, 0x75, 0xF0])
def test_packets_that_are_not_ip_are_rejected(first_byte: int) -> None:
    packet = bytearray(tcp_packet(4, b"x" * 30))
    packet[0] = first_byte
    rejected(vnet.PLAIN_HEADER + bytes(packet))


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("csum_start_shift, csum_offset", [(-4, 16), (4, 16), (0, 6), (0, 0)])
def test_segmentation_must_checksum_the_tcp_header(
    version: int, csum_start_shift: int, csum_offset: int
) -> None:
    """TSO checksums the TCP header: csum_start at its first byte, the field 16 bytes in."""
    frame = bytearray(gso_frame(version))
    assert check_tun_frame(bytes(frame)) == version
    frame[6:8] = (ip_length(version) + csum_start_shift).to_bytes(2, "little")
    frame[8:10] = csum_offset.to_bytes(2, "little")
    rejected(bytes(frame))
