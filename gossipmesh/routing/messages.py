"""Gossip, ping and pong control messages: frozen dataclasses with encode/decode.

Every payload starts with its `wire.PayloadKind` byte and the routing protocol
version; gossip payloads add a `GossipType` byte. Encodings are canonical and
each payload is at most `MAX_CONTROL_PAYLOAD` bytes; builders split what does
not fit (digests by id range, record batches by count).

    GOSSIP  | ver | SUMMARY   | record count u32 | 16 x bucket hash (8)
    GOSSIP  | ver | DIGEST    | low id | high id | n u16 | n x (origin id | sequence u64)
    GOSSIP  | ver | REQUEST   | n u16 | n x origin id
    GOSSIP  | ver | RECORDS   | n u8  | n x (length u16 | record)
    GOSSIP  | ver | BROADCAST | origin id | broadcast id u64 | hops left u8 | body kind u8 | body
    PING    | ver | nonce u64 | sender time u64 microseconds
    PONG    | ver | nonce u64 | echoed sender time u64
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from gossipmesh.routing.codec import (
    MAX_CONTROL_PAYLOAD,
    NODE_ID_SIZE,
    PROTOCOL_VERSION,
    MalformedMessage,
    check_header,
)
from gossipmesh.wire import PayloadKind

BUCKETS = 16
"""Digest summaries hash the record set in 16 buckets by the origin id's first nibble."""
BUCKET_HASH_SIZE = 8
LOWEST_ID = bytes(NODE_ID_SIZE)
HIGHEST_ID = b"\xff" * NODE_ID_SIZE


class GossipType(IntEnum):
    SUMMARY = 1
    DIGEST = 2
    REQUEST = 3
    RECORDS = 4
    BROADCAST = 5


class BodyKind(IntEnum):
    """What a broadcast carries."""

    LINK_STATE_RECORD = 1
    APPLICATION = 2
    """Opaque bytes for the node layer (delivered as an event)."""


def _gossip_header(kind: GossipType) -> bytes:
    return bytes((PayloadKind.GOSSIP, PROTOCOL_VERSION, kind))


_GOSSIP_HEADER_SIZE = 3
_DIGEST_ENTRY = struct.Struct("!20sQ")
_DIGEST_FIXED = _GOSSIP_HEADER_SIZE + 2 * NODE_ID_SIZE + 2
DIGEST_MAX_ENTRIES = (MAX_CONTROL_PAYLOAD - _DIGEST_FIXED) // _DIGEST_ENTRY.size
REQUEST_MAX_ORIGINS = (MAX_CONTROL_PAYLOAD - _GOSSIP_HEADER_SIZE - 2) // NODE_ID_SIZE
_RECORDS_FIXED = _GOSSIP_HEADER_SIZE + 1
_BROADCAST_FIXED = _GOSSIP_HEADER_SIZE + NODE_ID_SIZE + 8 + 1 + 1
MAX_BROADCAST_BODY = MAX_CONTROL_PAYLOAD - _BROADCAST_FIXED


@dataclass(frozen=True)
class Summary:
    """'This is my record set', in 135 bytes: the per-neighbour constant of anti-entropy."""

    record_count: int
    bucket_hashes: tuple[bytes, ...]

    def encode(self) -> bytes:
        return (
            _gossip_header(GossipType.SUMMARY)
            + struct.pack("!I", self.record_count)
            + b"".join(self.bucket_hashes)
        )


@dataclass(frozen=True)
class Digest:
    """Every (origin, sequence) the sender holds with origin in [low, high], sorted."""

    low: bytes
    high: bytes
    entries: tuple[tuple[bytes, int], ...]

    def encode(self) -> bytes:
        return (
            _gossip_header(GossipType.DIGEST)
            + self.low
            + self.high
            + struct.pack("!H", len(self.entries))
            + b"".join(_DIGEST_ENTRY.pack(o, s) for o, s in self.entries)
        )


@dataclass(frozen=True)
class Request:
    """Send me your records of these origins."""

    origins: tuple[bytes, ...]

    def encode(self) -> bytes:
        return (
            _gossip_header(GossipType.REQUEST)
            + struct.pack("!H", len(self.origins))
            + b"".join(self.origins)
        )


@dataclass(frozen=True)
class Records:
    """Encoded link-state records (decoded and verified by the receiver)."""

    records: tuple[bytes, ...]

    def encode(self) -> bytes:
        parts = [_gossip_header(GossipType.RECORDS), bytes((len(self.records),))]
        for record in self.records:
            parts.append(struct.pack("!H", len(record)))
            parts.append(record)
        return b"".join(parts)


@dataclass(frozen=True)
class Broadcast:
    """A flooded message, de-duplicated by (origin, broadcast id) at every node."""

    origin: bytes
    broadcast_id: int
    hops_left: int
    body_kind: int
    body: bytes

    def encode(self) -> bytes:
        return (
            _gossip_header(GossipType.BROADCAST)
            + self.origin
            + struct.pack("!QBB", self.broadcast_id, self.hops_left, self.body_kind)
            + self.body
        )


GossipMessage = Summary | Digest | Request | Records | Broadcast


def decode_gossip(data: bytes) -> GossipMessage:
    """Parse a GOSSIP payload; anything else is `MalformedMessage`."""
    reader = check_header(data, PayloadKind.GOSSIP)
    try:
        kind = GossipType(reader.u8())
    except ValueError:
        raise MalformedMessage("unknown gossip message type") from None
    message: GossipMessage
    if kind is GossipType.SUMMARY:
        count = reader.u32()
        hashes = tuple(reader.take(BUCKET_HASH_SIZE) for _ in range(BUCKETS))
        message = Summary(count, hashes)
    elif kind is GossipType.DIGEST:
        low, high = reader.node_id(), reader.node_id()
        if low > high:
            raise MalformedMessage("digest range is empty")
        count = reader.u16()
        if count > DIGEST_MAX_ENTRIES:
            raise MalformedMessage("too many digest entries")
        entries = tuple(_DIGEST_ENTRY.unpack(reader.take(_DIGEST_ENTRY.size)) for _ in range(count))
        previous = None
        for origin, _ in entries:
            if not low <= origin <= high or (previous is not None and origin <= previous):
                raise MalformedMessage("digest entries unsorted or outside their range")
            previous = origin
        message = Digest(low, high, entries)
    elif kind is GossipType.REQUEST:
        count = reader.u16()
        if count > REQUEST_MAX_ORIGINS:
            raise MalformedMessage("too many requested origins")
        message = Request(tuple(reader.node_id() for _ in range(count)))
    elif kind is GossipType.RECORDS:
        count = reader.u8()
        records = []
        for _ in range(count):
            records.append(reader.take(reader.u16()))
        message = Records(tuple(records))
    else:
        origin = reader.node_id()
        broadcast_id, hops_left, body_kind = reader.u64(), reader.u8(), reader.u8()
        message = Broadcast(origin, broadcast_id, hops_left, body_kind, reader.rest())
    reader.finish()
    return message


# --- builders that respect the size bound ----------------------------------


def digests_for_range(
    low: bytes, high: bytes, entries: Sequence[tuple[bytes, int]]
) -> list[Digest]:
    """Digests covering [low, high] exactly, split so each fits one payload.

    `entries` are the sorted (origin, sequence) pairs inside the range. Each
    piece covers a contiguous sub-range, so the receiver can tell what the
    sender lacks from each piece alone.
    """
    pieces: list[Digest] = []
    start = low
    index = 0
    while True:
        chunk = entries[index : index + DIGEST_MAX_ENTRIES]
        index += len(chunk)
        if index >= len(entries):
            pieces.append(Digest(start, high, tuple(chunk)))
            return pieces
        end = chunk[-1][0]
        pieces.append(Digest(start, end, tuple(chunk)))
        start = (int.from_bytes(end, "big") + 1).to_bytes(NODE_ID_SIZE, "big")


def requests_for(origins: Iterable[bytes]) -> list[Request]:
    wanted = list(origins)
    return [
        Request(tuple(wanted[i : i + REQUEST_MAX_ORIGINS]))
        for i in range(0, len(wanted), REQUEST_MAX_ORIGINS)
    ]


def records_batches(encoded_records: Iterable[bytes]) -> list[Records]:
    """Pack encoded records into as few RECORDS payloads as the bound allows."""
    batches: list[Records] = []
    current: list[bytes] = []
    size = _RECORDS_FIXED
    for record in encoded_records:
        needed = 2 + len(record)
        if current and (size + needed > MAX_CONTROL_PAYLOAD or len(current) == 255):
            batches.append(Records(tuple(current)))
            current, size = [], _RECORDS_FIXED
        current.append(record)
        size += needed
    if current:
        batches.append(Records(tuple(current)))
    return batches


def bucket_of(origin: bytes) -> int:
    return origin[0] >> 4


def bucket_range(bucket: int) -> tuple[bytes, bytes]:
    low = bytes((bucket << 4,)) + bytes(NODE_ID_SIZE - 1)
    high = bytes(((bucket << 4) | 0x0F,)) + b"\xff" * (NODE_ID_SIZE - 1)
    return low, high


# --- ping / pong ------------------------------------------------------------

_PROBE = struct.Struct("!BBQQ")


@dataclass(frozen=True)
class Ping:
    """A keepalive that also measures RTT; the receiver answers with a Pong at once."""

    nonce: int
    sent_at_us: int

    def encode(self) -> bytes:
        return _PROBE.pack(PayloadKind.PING, PROTOCOL_VERSION, self.nonce, self.sent_at_us)


@dataclass(frozen=True)
class Pong:
    nonce: int
    echoed_sent_at_us: int

    def encode(self) -> bytes:
        return _PROBE.pack(PayloadKind.PONG, PROTOCOL_VERSION, self.nonce, self.echoed_sent_at_us)


def decode_probe(data: bytes) -> Ping | Pong:
    """Parse a PING or PONG payload."""
    if len(data) != _PROBE.size:
        raise MalformedMessage("a ping or pong is exactly 18 bytes")
    kind, version, nonce, timestamp = _PROBE.unpack(data)
    if version != PROTOCOL_VERSION:
        raise MalformedMessage(f"unsupported routing protocol version {version}")
    if kind == PayloadKind.PING:
        return Ping(nonce, timestamp)
    if kind == PayloadKind.PONG:
        return Pong(nonce, timestamp)
    raise MalformedMessage("not a ping or pong")
