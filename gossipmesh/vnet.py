"""TUN offloads: the virtio_net_hdr, TCP segmentation and TCP coalescing. Pure, no I/O.

With IFF_VNET_HDR and TUNSETOFFLOAD the kernel hands the daemon TCP
super-packets of up to 64 KiB (one read instead of ~50) and accepts them
back (one write, and one pass through the kernel's TCP receive path instead
of ~50). On the wire every packet stays an ordinary IP packet of at most the
TUN MTU, with correct checksums, so a stock WireGuard peer sees nothing new
and losing one underlay datagram loses one TCP segment, as before:

- `segment` splits a super-packet read from the TUN into MSS-sized segments
  (the kernel's TSO, done here);
- `coalesce` joins in-order segments of one TCP flow, as they come out of
  the sessions, into super-packets to write (the kernel's GRO, done here).

Every packet read from or written to such a TUN starts with a 10-byte
virtio_net_hdr (little-endian on every machine we run on):
flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

try:  # numpy sums all of a super-packet's segments in one call
    import numpy
except ImportError:  # pragma: no cover - the pure fallback below is exact too
    numpy = None  # type: ignore[assignment]

VNET_HDR_SIZE: Final = 10
VNET_HDR = struct.Struct("<BBHHHH")

NEEDS_CSUM: Final = 1
"""Flag: the checksum at csum_start + csum_offset holds only the pseudo-header sum."""
DATA_VALID: Final = 2

GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4
GSO_ECN: Final = 0x80

PLAIN_HEADER: Final = bytes(VNET_HDR_SIZE)
"""The header for a packet written as-is (checksums complete, no segmentation)."""

TCP: Final = 6
TCP_CHECKSUM_OFFSET: Final = 16
UDP: Final = 17
TCP_FIN: Final = 0x01
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10
TCP_CWR: Final = 0x80

MAX_COALESCED: Final = 65535
"""Largest IP packet a coalesced run may become (IPv4's total length field)."""
MAX_SEGMENTS: Final = 64


class OffloadError(ValueError):
    """A packet from the TUN whose offload request this module cannot honour."""


def internet_sum(data: bytes | bytearray | memoryview) -> int:
    """The ones'-complement sum of `data` as 16-bit big-endian words, modulo 0xFFFF.

    Since 2**16 == 1 (mod 0xFFFF), the integer the bytes spell is congruent
    to the sum of its words; odd lengths are padded with a zero byte.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def checksum_from_sum(total: int) -> int:
    """The checksum field for a ones'-complement sum (0xFFFF for zero: TCP and UDP accept it)."""
    return 0xFFFF - total % 0xFFFF


def complete_checksum(packet: bytearray, csum_start: int, csum_offset: int) -> None:
    """Finish a NEEDS_CSUM packet: the field holds the pseudo-header sum already."""
    field = csum_start + csum_offset
    if field + 2 > len(packet):
        raise OffloadError("checksum field beyond the packet")
    packet[field : field + 2] = checksum_from_sum(internet_sum(packet[csum_start:])).to_bytes(
        2, "big"
    )


def _segment_sums(payload: memoryview, mss: int) -> list[int]:
    """The internet sum of each `mss`-sized slice of `payload` (the last may be shorter)."""
    count = -(-len(payload) // mss)
    if numpy is not None and mss % 2 == 0 and count > 2:
        full = len(payload) // mss
        words = numpy.frombuffer(payload, dtype=">u2", count=full * mss // 2)
        sums: list[int] = words.reshape(full, mss // 2).sum(axis=1, dtype=numpy.uint64).tolist()
        if full < count:
            sums.append(internet_sum(payload[full * mss :]))
        return sums
    return [internet_sum(payload[i : i + mss]) for i in range(0, len(payload), mss)]


def _layout(packet: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(version, IP header length, TCP header length) of a TCP packet, or OffloadError."""
    version = packet[0] >> 4
    if version == 4:
        ip_length = (packet[0] & 15) * 4
        protocol = packet[9]
    elif version == 6:
        ip_length = 40
        protocol = packet[6]
    else:
        raise OffloadError("not an IP packet")
    if protocol != TCP or len(packet) < ip_length + 20:
        raise OffloadError("segmentation offload for a packet that is not plain TCP")
    tcp_length = (packet[ip_length + 12] >> 4) * 4
    if tcp_length < 20 or len(packet) < ip_length + tcp_length:
        raise OffloadError("bad TCP header length")
    return version, ip_length, tcp_length


def _pseudo_sum(packet: bytes | bytearray | memoryview, version: int) -> int:
    """Sum of the addresses and protocol of the TCP pseudo-header (the length is added later)."""
    addresses = packet[12:20] if version == 4 else packet[8:40]
    return internet_sum(addresses) + TCP


def segment(packet: bytes, mss: int) -> list[bytes]:
    """Split a TCP super-packet (no virtio header) into packets of at most `mss` payload bytes.

    Each segment gets its own IP length (and IPv4 id and header checksum),
    sequence number and full TCP checksum; FIN and PSH stay on the last
    segment, CWR on the first, as a NIC's TSO does. The checksums are sums of
    the fixed header words (computed once) plus the fields that change, so
    per segment this is integer arithmetic and one `struct.pack`.
    """
    version, ip_length, tcp_length = _layout(packet)
    if mss <= 0:
        raise OffloadError("segment size 0")
    header_length = ip_length + tcp_length
    view = memoryview(packet)
    payload = view[header_length:]
    tcp = bytes(view[ip_length:header_length])
    sequence = int.from_bytes(tcp[4:8], "big")
    flags = tcp[13]
    fixed_tcp = bytearray(tcp)
    fixed_tcp[4:8] = b"\x00\x00\x00\x00"
    fixed_tcp[13] = 0
    fixed_tcp[16:18] = b"\x00\x00"
    tcp_fixed_sum = _pseudo_sum(packet, version) + internet_sum(fixed_tcp)
    tcp_parts = (tcp[0:4], tcp[8:13], tcp[14:16], tcp[18:])
    ip = bytes(view[:ip_length])
    sums = _segment_sums(payload, mss)
    last = len(sums) - 1
    segments: list[bytes] = []
    append = segments.append
    if version == 4:
        layout = struct.Struct(f"!2sHH4sH{ip_length - 12}s4sI5sB2sH{tcp_length - 18}s")
        fixed_ip = bytearray(ip)
        fixed_ip[2:6] = b"\x00\x00\x00\x00"
        fixed_ip[10:12] = b"\x00\x00"
        ip_fixed_sum = internet_sum(fixed_ip)
        ip_id = int.from_bytes(ip[4:6], "big")
        ip_head, ip_middle, ip_tail = ip[0:2], ip[6:10], ip[12:]
    else:
        layout = struct.Struct(f"!4sH34s4sI5sB2sH{tcp_length - 18}s")
        ip_head, ip_tail = ip[0:4], ip[6:40]
    pack = layout.pack
    for index, payload_sum in enumerate(sums):
        offset = index * mss
        chunk = payload[offset : offset + mss]
        segment_sequence = (sequence + offset) & 0xFFFFFFFF
        segment_flags = flags
        if index != last:
            segment_flags &= ~(TCP_FIN | TCP_PSH)
        if index:
            segment_flags &= ~TCP_CWR
        segment_length = tcp_length + len(chunk)
        tcp_check = (
            0xFFFF
            - (
                tcp_fixed_sum
                + segment_length
                + (segment_sequence >> 16)
                + (segment_sequence & 0xFFFF)
                + segment_flags
                + payload_sum
            )
            % 0xFFFF
        )
        if version == 4:
            total_length = ip_length + segment_length
            identification = (ip_id + index) & 0xFFFF
            ip_check = 0xFFFF - (ip_fixed_sum + total_length + identification) % 0xFFFF
            header = pack(
                ip_head, total_length, identification, ip_middle, ip_check, ip_tail,
                tcp_parts[0], segment_sequence, tcp_parts[1], segment_flags, tcp_parts[2],
                tcp_check, tcp_parts[3],
            )  # fmt: skip
        else:
            header = pack(
                ip_head, segment_length, ip_tail,
                tcp_parts[0], segment_sequence, tcp_parts[1], segment_flags, tcp_parts[2],
                tcp_check, tcp_parts[3],
            )  # fmt: skip
        append(header + chunk)
    return segments


def packets_from_tun(frame: bytes) -> list[bytes]:
    """The IP packets in one read from a vnet-header TUN: one, or a super-packet's segments."""
    if len(frame) <= VNET_HDR_SIZE:
        raise OffloadError("short read")
    flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    gso_type &= ~GSO_ECN
    if gso_type == GSO_NONE:
        if not flags & NEEDS_CSUM:
            return [frame[VNET_HDR_SIZE:]]
        packet = bytearray(frame[VNET_HDR_SIZE:])
        if (
            packet[0] == 0x45
            and packet[9] == UDP
            and csum_start == 20
            and csum_offset == 6
            and len(packet) >= 28
        ):
            # IPv4 UDP may say "no checksum" (RFC 768): the AEAD already guards
            # the bytes, and summing 1,300 bytes in Python costs ~3 us a packet.
            packet[26:28] = b"\x00\x00"
        else:
            complete_checksum(packet, csum_start, csum_offset)
        return [bytes(packet)]
    if gso_type in (GSO_TCPV4, GSO_TCPV6):
        return segment(frame[VNET_HDR_SIZE:], gso_size)
    raise OffloadError(f"unsupported segmentation offload type {gso_type}")


def check_tun_frame(frame: bytes | memoryview) -> int:
    """The IP version of a TUN frame a peer sent whole (a stream link); OffloadError if unsafe.

    The receiving kernel trusts a frame's virtio_net_hdr as it would a
    virtual NIC's: allow only what our own TUN reads produce (no offload, or
    TCP segmentation of the packet's own IP version, with a checksum request
    inside the packet), so a peer cannot make the kernel segment or
    checksum anything else.
    """
    size = len(frame)
    if size < VNET_HDR_SIZE + 20:
        raise OffloadError("frame shorter than an IP header")
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    version = frame[VNET_HDR_SIZE] >> 4
    if version not in (4, 6):
        raise OffloadError("not an IP packet")
    packet_size = size - VNET_HDR_SIZE
    if version == 6 and packet_size < 40:
        raise OffloadError("frame shorter than an IPv6 header")
    if flags & ~(NEEDS_CSUM | DATA_VALID):
        raise OffloadError(f"unknown virtio_net_hdr flags {flags:#x}")
    if flags & NEEDS_CSUM and csum_start + csum_offset + 2 > packet_size:
        raise OffloadError("checksum field beyond the packet")
    if gso_type == GSO_NONE:
        return version
    kind = gso_type & ~GSO_ECN  # GSO_ECN alone names no segmentation: the kernel refuses it
    if kind not in (GSO_TCPV4, GSO_TCPV6) or (kind == GSO_TCPV4) != (version == 4):
        raise OffloadError(f"segmentation offload type {gso_type} for IPv{version}")
    protocol = frame[VNET_HDR_SIZE + 9] if version == 4 else frame[VNET_HDR_SIZE + 6]
    if protocol != TCP or not flags & NEEDS_CSUM or gso_size == 0 or hdr_len > packet_size:
        raise OffloadError("segmentation offload for a packet that is not plain TCP")
    ip_length = (frame[VNET_HDR_SIZE] & 15) * 4 if version == 4 else 40
    if csum_start != ip_length or csum_offset != TCP_CHECKSUM_OFFSET:
        raise OffloadError("segmentation offload whose checksum is not the TCP header's")
    return version


_RUN_MASKS: dict[tuple[int, int], int] = {}


def _run_mask(ip_length: int, tcp_length: int) -> int:
    """A mask over the headers that clears what differs between consecutive segments.

    IP length, IPv4 id and checksum, sequence number, PSH and TCP checksum:
    two segments may join a run when their masked headers are equal.
    """
    mask = _RUN_MASKS.get((ip_length, tcp_length))
    if mask is None:
        template = bytearray(b"\xff" * (ip_length + tcp_length))
        if ip_length == 40:
            template[4:6] = b"\x00\x00"
        else:
            template[2:6] = b"\x00\x00\x00\x00"
            template[10:12] = b"\x00\x00"
        template[ip_length + 4 : ip_length + 8] = b"\x00\x00\x00\x00"
        template[ip_length + 13] = 0xFF & ~TCP_PSH
        template[ip_length + 16 : ip_length + 18] = b"\x00\x00"
        mask = _RUN_MASKS[(ip_length, tcp_length)] = int.from_bytes(template, "big")
    return mask


def _coalescible(packet: bytes) -> tuple[int, int] | None:
    """(IP header length, TCP header length) if `packet` may join a run, else None."""
    version = packet[0] >> 4
    if version == 4:
        if packet[0] != 0x45 or packet[9] != TCP or packet[6] & 0x3F or packet[7]:
            return None  # options, or a fragment
        ip_length = 20
    elif version == 6:
        if packet[6] != TCP:
            return None
        ip_length = 40
    else:
        return None
    if len(packet) < ip_length + 20:
        return None
    flags = packet[ip_length + 13]
    if flags & ~TCP_PSH != TCP_ACK:
        return None  # SYN, FIN, RST, URG, ECE and CWR go alone
    tcp_length = (packet[ip_length + 12] >> 4) * 4
    if tcp_length < 20 or len(packet) <= ip_length + tcp_length:
        return None  # a bare ACK carries nothing to join
    return ip_length, tcp_length


def coalesce(packets: Sequence[bytes]) -> list[list[bytes | memoryview]]:
    """Group in-order TCP segments of one flow into writes for a vnet-header TUN.

    Each returned item is the buffer list of one write: the virtio header,
    then either a plain packet, or the first segment's headers (lengths and
    checksums adjusted, the TCP checksum left as the pseudo-header sum with
    NEEDS_CSUM) followed by every segment's payload. Packets that cannot join
    a run pass through unchanged, in order.
    """
    writes: list[list[bytes | memoryview]] = []
    count = len(packets)
    index = 0
    while index < count:
        first = packets[index]
        index += 1
        layout = _coalescible(first)
        if layout is None:
            writes.append([PLAIN_HEADER, first])
            continue
        ip_length, tcp_length = layout
        header_length = ip_length + tcp_length
        size = len(first) - header_length
        if first[ip_length + 13] & TCP_PSH:
            writes.append([PLAIN_HEADER, first])
            continue
        mask = _run_mask(ip_length, tcp_length)
        key = int.from_bytes(first[:header_length], "big") & mask
        next_sequence = int.from_bytes(first[ip_length + 4 : ip_length + 8], "big") + size
        payloads: list[bytes | memoryview] = [memoryview(first)[header_length:]]
        total = len(first)
        last = first
        while index < count and len(payloads) < MAX_SEGMENTS:
            candidate = packets[index]
            candidate_size = len(candidate) - header_length
            # Equal masked headers mean: same flow, version, header lengths and
            # options, no fragment, flags ACK or ACK|PSH (as the first's).
            if (
                candidate_size <= 0
                or candidate_size > size
                or total + candidate_size > MAX_COALESCED
                or int.from_bytes(candidate[:header_length], "big") & mask != key
                or int.from_bytes(candidate[ip_length + 4 : ip_length + 8], "big")
                != next_sequence & 0xFFFFFFFF
            ):
                break
            index += 1
            payloads.append(memoryview(candidate)[header_length:])
            total += candidate_size
            next_sequence += candidate_size
            last = candidate
            if candidate_size < size or candidate[ip_length + 13] & TCP_PSH:
                break
        if len(payloads) == 1:
            writes.append([PLAIN_HEADER, first])
            continue
        writes.append(_super_packet(first, last, ip_length, tcp_length, size, total, payloads))
    return writes


def _super_packet(
    first: bytes,
    last: bytes,
    ip_length: int,
    tcp_length: int,
    size: int,
    total: int,
    payloads: list[bytes | memoryview],
) -> list[bytes | memoryview]:
    """The virtio header and headers for a run of segments, then their payloads."""
    header = bytearray(first[: ip_length + tcp_length])
    version = first[0] >> 4
    if version == 4:
        header[2:4] = total.to_bytes(2, "big")
        header[10:12] = b"\x00\x00"
        header[10:12] = checksum_from_sum(internet_sum(header[:ip_length])).to_bytes(2, "big")
        gso_type = GSO_TCPV4
    else:
        header[4:6] = (total - 40).to_bytes(2, "big")
        gso_type = GSO_TCPV6
    tcp = ip_length
    header[tcp + 13] = last[tcp + 13]  # PSH from the run's last segment
    pseudo = (_pseudo_sum(first, version) + total - ip_length) % 0xFFFF
    header[tcp + 16 : tcp + 18] = pseudo.to_bytes(2, "big")
    virtio = VNET_HDR.pack(NEEDS_CSUM, gso_type, ip_length + tcp_length, size, ip_length, 16)
    return [virtio, bytes(header), *payloads]
