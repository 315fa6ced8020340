"""WireGuard's four message layouts: exact sizes, little-endian indexes, no logic.

    initiation (148): type=1, 3 zero, sender(4), ephemeral(32), static(32+16),
                      timestamp(12+16), mac1(16), mac2(16)
    response    (92): type=2, 3 zero, sender(4), receiver(4), ephemeral(32),
                      empty(0+16), mac1(16), mac2(16)
    cookie reply(64): type=3, 3 zero, receiver(4), nonce(24), cookie(16+16)
    transport (>=32): type=4, 3 zero, receiver(4), counter(8), ciphertext(n+16)

The first four bytes are a little-endian u32 type, so a non-zero reserved byte
makes an unknown type. Every parser raises only `MalformedMessage`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
TRANSPORT_HEADER_SIZE = 16
TRANSPORT_MINIMUM_SIZE = 32
"""Header plus an empty (keepalive) ciphertext's 16-byte tag."""
MAX_TRANSPORT_SIZE = TRANSPORT_HEADER_SIZE + 65535 + 16
"""No UDP datagram is larger; anything longer came from elsewhere and is refused."""
MACS_SIZE = 32

INITIATION_HEADER = b"\x01\x00\x00\x00"
RESPONSE_HEADER = b"\x02\x00\x00\x00"
COOKIE_REPLY_HEADER = b"\x03\x00\x00\x00"
TRANSPORT_HEADER = b"\x04\x00\x00\x00"

_INITIATION = struct.Struct("<4sI32s48s28s16s16s")
_RESPONSE = struct.Struct("<4sII32s16s16s16s")
_COOKIE_REPLY = struct.Struct("<4sI24s32s")


class MalformedMessage(ValueError):
    """A datagram that is not a well-formed WireGuard message of its type."""


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes
    mac2: bytes


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes
    mac2: bytes


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes


def parse_initiation(data: bytes) -> Initiation:
    if len(data) != INITIATION_SIZE:
        raise MalformedMessage(f"initiation must be {INITIATION_SIZE} bytes, got {len(data)}")
    header, sender, ephemeral, static, timestamp, mac1, mac2 = _INITIATION.unpack(data)
    if header != INITIATION_HEADER:
        raise MalformedMessage("not a handshake initiation")
    return Initiation(sender, ephemeral, static, timestamp, mac1, mac2)


def parse_response(data: bytes) -> Response:
    if len(data) != RESPONSE_SIZE:
        raise MalformedMessage(f"response must be {RESPONSE_SIZE} bytes, got {len(data)}")
    header, sender, receiver, ephemeral, nothing, mac1, mac2 = _RESPONSE.unpack(data)
    if header != RESPONSE_HEADER:
        raise MalformedMessage("not a handshake response")
    return Response(sender, receiver, ephemeral, nothing, mac1, mac2)


def parse_cookie_reply(data: bytes) -> CookieReply:
    if len(data) != COOKIE_REPLY_SIZE:
        raise MalformedMessage(f"cookie reply must be {COOKIE_REPLY_SIZE} bytes, got {len(data)}")
    header, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
    if header != COOKIE_REPLY_HEADER:
        raise MalformedMessage("not a cookie reply")
    return CookieReply(receiver, nonce, cookie)


@dataclass(frozen=True, slots=True)
class TransportHeader:
    receiver: int
    counter: int


def parse_transport_header(data: bytes) -> TransportHeader:
    """The clear part of a transport message (the fast path reads it inline)."""
    if not TRANSPORT_MINIMUM_SIZE <= len(data) <= MAX_TRANSPORT_SIZE:
        raise MalformedMessage(f"transport message of {len(data)} bytes")
    if data[:4] != TRANSPORT_HEADER:
        raise MalformedMessage("not a transport message")
    return TransportHeader(
        int.from_bytes(data[4:8], "little"), int.from_bytes(data[8:16], "little")
    )


def build_initiation_body(
    sender: int, ephemeral: bytes, encrypted_static: bytes, encrypted_timestamp: bytes
) -> bytes:
    """Everything before mac1; the cookie layer appends the two MACs."""
    return (
        INITIATION_HEADER
        + sender.to_bytes(4, "little")
        + ephemeral
        + encrypted_static
        + encrypted_timestamp
    )


def build_response_body(
    sender: int, receiver: int, ephemeral: bytes, encrypted_nothing: bytes
) -> bytes:
    return (
        RESPONSE_HEADER
        + sender.to_bytes(4, "little")
        + receiver.to_bytes(4, "little")
        + ephemeral
        + encrypted_nothing
    )


def build_cookie_reply(receiver: int, nonce: bytes, encrypted_cookie: bytes) -> bytes:
    return COOKIE_REPLY_HEADER + receiver.to_bytes(4, "little") + nonce + encrypted_cookie


def transport_prefix(receiver: int) -> bytes:
    """The first 8 bytes of every transport message sent with one keypair."""
    return TRANSPORT_HEADER + receiver.to_bytes(4, "little")
