"""TUN frames for the stream-link tests: a 10-byte virtio_net_hdr and an IPv4 packet."""

from __future__ import annotations

import struct


def ipv4_packet(
    payload: bytes, *, source: bytes = b"\x64\x40\x00\x01", protocol: int = 17
) -> bytes:
    """An IPv4 packet (no options) carrying `payload`; the checksums do not matter here."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x1234,
        0x4000,
        64,
        protocol,
        0,
        source,
        b"\x64\x40\x00\x02",
    )
    return header + payload


def tun_frame(payload: bytes = b"", *, source: bytes = b"\x64\x40\x00\x01") -> bytes:
    """A plain TUN frame (no offload requested) holding one IPv4 packet."""
    return bytes(10) + ipv4_packet(payload, source=source)
