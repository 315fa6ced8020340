"""Signed node records and name records: the codec shared by discovery, gossip, DNS and the daemon.

A node record binds everything others need to reach a node (its endpoints, the
IPv4 counter it holds, its name claim) to its Ed25519 key; a name record binds a
human name to the key of its holder. Both are signed over a canonical encoding,
so any node can store, serve and forward them without being trusted.

Encoding (big-endian, struct-based, one byte string per record value; the
signature covers a domain label plus every byte before the signature):

    node record v1:
      u8 type=1  u8 version=1  32s public_key  u64 sequence  u64 issued_at
      u64 expires_at  u16 ipv4_counter  u64 ipv4_held_since  u16 flags
      u8 name_len  name (ASCII, normalized)  u64 name_claimed_since
      u8 endpoint_count  { u8 kind  u8 body_len  body }*
      u8 extension_count  { u8 type  u16 length  value }*   (types strictly increasing)
      64s signature
    endpoint body: u8 family (4|6)  4s|16s address  u16 port  detail (kind-specific, may be empty)

    name record v1:
      u8 type=2  u8 version=1  32s public_key  u64 sequence  u64 issued_at
      u64 expires_at  u64 claimed_since  u8 name_len  name
      u8 extension_count  { u8 type  u16 length  value }*
      64s signature

Extensibility: endpoint kinds and extension types a node does not know are kept
as opaque bytes (they are signed, so they must round-trip); a new layout gets a
new version byte, which older nodes refuse as `unsupported_version`.

Addresses are not carried: they follow from the key (`addressing.ipv6_for`, and
`ipv4_for` with the counter). Times are integer Unix seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Final

from gossipmesh.addressing import (
    DEFAULT_IPV4_NETWORK,
    MAX_COUNTER,
    AddressClaim,
    ipv4_for,
    ipv6_for,
)
from gossipmesh.errors import LabelError
from gossipmesh.identity import (
    NODE_ID_SIZE,
    PUBLIC_KEY_SIZE,
    Identity,
    node_id_from_public_key,
    verify_signature,
)
from gossipmesh.names import NameClaim, check_claimable, normalize_label

NODE_RECORD_TYPE: Final = 1
NAME_RECORD_TYPE: Final = 2
RECORD_VERSION: Final = 1

MAX_RECORD_SIZE: Final = 1024
"""Largest encoded record accepted: one unfragmented datagram even after DHT sealing."""
MAX_ENDPOINTS: Final = 16
MAX_EXTENSIONS: Final = 16
MAX_CLOCK_SKEW: Final = 300
"""Seconds a record's issued_at may lie ahead of our clock (clocks differ; sequence orders)."""
MAX_LIFETIME: Final = 24 * 3600
"""Longest expires_at - issued_at accepted, so a dead node's record cannot live on for long."""
SIGNATURE_SIZE: Final = 64
_U64_MAX: Final = (1 << 64) - 1

_NODE_SIGNING_LABEL: Final = b"gossipmesh node record\x00"
_NAME_SIGNING_LABEL: Final = b"gossipmesh name record\x00"

_NODE_HEADER = struct.Struct(">BB32sQQQHQH")
_NAME_HEADER = struct.Struct(">BB32sQQQQ")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


class RefusalReason(StrEnum):
    """Why a record was refused; the value is the stats counter name."""

    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    OVERSIZED = "oversized"
    BAD_NAME = "bad_name"
    BAD_SIGNATURE = "bad_signature"
    STALE_SEQUENCE = "stale_sequence"
    EXPIRED = "expired"
    FROM_FUTURE = "from_future"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    WRONG_KEY = "wrong_key"
    """Stored under a DHT key that does not belong to the record."""
    NAME_TAKEN = "name_taken"
    """Another holder's unexpired claim on the name wins the name rule."""
    STORAGE_FULL = "storage_full"
    NOT_ADMITTED = "not_admitted"
    """A network with an authority: the record's node has no valid certificate for it."""


class RecordError(ValueError):
    """A record was refused; `reason` says why (the only error the codec and validate raise)."""

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(f"record refused ({reason.value}){': ' + detail if detail else ''}")
        self.reason = reason


class EndpointKind(IntEnum):
    """How an endpoint was learned. NAT traversal adds kinds later; unknown ones round-trip."""

    HOST = 1
    """An address of one of the node's own interfaces (or configured)."""
    REFLEXIVE = 2
    """The address:port at which other nodes see the node (learned by echo)."""


@dataclass(frozen=True)
class Endpoint:
    """A (kind, host, port) where the node may be reached; host is an IP literal."""

    kind: int
    host: str
    port: int
    detail: bytes = b""
    """Kind-specific bytes after the address (empty for host/reflexive)."""

    def __post_init__(self) -> None:
        # One text form per address, so decode(encode(endpoint)) == endpoint.
        with contextlib.suppress(ValueError):  # a non-IP host is refused by encode()
            object.__setattr__(self, "host", str(ipaddress.ip_address(self.host)))

    def encode(self) -> bytes:
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise RecordError(RefusalReason.MALFORMED, f"endpoint host {self.host!r}") from None
        if not 1 <= self.kind <= 255 or not 1 <= self.port <= 65535:
            raise RecordError(RefusalReason.MALFORMED, "endpoint kind or port out of range")
        body = bytes([address.version]) + address.packed + _U16.pack(self.port) + self.detail
        if len(body) > 255:
            raise RecordError(RefusalReason.OVERSIZED, "endpoint detail too long")
        return bytes([self.kind, len(body)]) + body


@dataclass(frozen=True)
class NodeRecord:
    """A node's signed self-description, stored in the DHT under its node id."""

    public_key: bytes
    sequence: int
    issued_at: int
    expires_at: int
    ipv4_counter: int = 0
    ipv4_held_since: int = 0
    name: str = ""
    """The human name claimed ("" for none), normalized."""
    name_claimed_since: int = 0
    endpoints: tuple[Endpoint, ...] = ()
    flags: int = 0
    """Capability bits (none defined yet); unknown bits are kept and signed."""
    extensions: tuple[tuple[int, bytes], ...] = ()
    signature: bytes = field(default=bytes(SIGNATURE_SIZE), repr=False)

    @property
    def node_id(self) -> bytes:
        return node_id_from_public_key(self.public_key)

    @property
    def ipv6(self) -> ipaddress.IPv6Address:
        return ipv6_for(self.public_key)

    def ipv4(
        self, network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK
    ) -> ipaddress.IPv4Address | None:
        return ipv4_for(self.public_key, self.ipv4_counter, network)

    def address_claim(self) -> AddressClaim:
        """Input to `addressing.resolve_ipv4_claims`."""
        return AddressClaim(self.ipv4_held_since, self.node_id, self.public_key, self.ipv4_counter)

    def name_claim(self) -> NameClaim | None:
        """Input to `names.resolve_name_claims`, or None without a name."""
        if not self.name:
            return None
        return NameClaim(self.name_claimed_since, self.node_id, self.name)

    def endpoints_of(self, kind: EndpointKind) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.kind == kind)

    def signed_body(self) -> bytes:
        """Every encoded byte before the signature."""
        _check_common(self.public_key, self.sequence, self.issued_at, self.expires_at)
        if not 0 <= self.ipv4_counter < min(MAX_COUNTER, 1 << 16):
            raise RecordError(RefusalReason.MALFORMED, "ipv4 counter out of range")
        for value in (self.ipv4_held_since, self.name_claimed_since):
            _check_u64(value)
        if not 0 <= self.flags <= 0xFFFF:
            raise RecordError(RefusalReason.MALFORMED, "flags out of range")
        if not self.name and self.name_claimed_since:
            raise RecordError(RefusalReason.MALFORMED, "name_claimed_since without a name")
        if len(self.endpoints) > MAX_ENDPOINTS:
            raise RecordError(RefusalReason.OVERSIZED, f"more than {MAX_ENDPOINTS} endpoints")
        parts = [
            _NODE_HEADER.pack(
                NODE_RECORD_TYPE,
                RECORD_VERSION,
                self.public_key,
                self.sequence,
                self.issued_at,
                self.expires_at,
                self.ipv4_counter,
                self.ipv4_held_since,
                self.flags,
            ),
            _encode_name(self.name, self.public_key),
            _U64.pack(self.name_claimed_since),
            _U8.pack(len(self.endpoints)),
            *(endpoint.encode() for endpoint in self.endpoints),
            _encode_extensions(self.extensions),
        ]
        return b"".join(parts)

    def encode(self) -> bytes:
        data = self.signed_body() + self.signature
        if len(self.signature) != SIGNATURE_SIZE:
            raise RecordError(RefusalReason.MALFORMED, "signature must be 64 bytes")
        if len(data) > MAX_RECORD_SIZE:
            raise RecordError(RefusalReason.OVERSIZED, f"{len(data)} > {MAX_RECORD_SIZE} bytes")
        return data

    def signed(self, identity: Identity) -> NodeRecord:
        """This record signed by `identity` (whose key must be the record's)."""
        if identity.public_key != self.public_key:
            raise ValueError("a node record can only be signed by its own key")
        message = _NODE_SIGNING_LABEL + self.signed_body()
        return replace(self, signature=identity.sign(message))

    def signature_valid(self) -> bool:
        return verify_signature(
            self.public_key, _NODE_SIGNING_LABEL + self.signed_body(), self.signature
        )


@dataclass(frozen=True)
class NameRecord:
    """Who holds a human name: stored in the DHT under `name_key(name)`."""

    name: str
    public_key: bytes
    claimed_since: int
    sequence: int
    issued_at: int
    expires_at: int
    extensions: tuple[tuple[int, bytes], ...] = ()
    signature: bytes = field(default=bytes(SIGNATURE_SIZE), repr=False)

    @property
    def node_id(self) -> bytes:
        return node_id_from_public_key(self.public_key)

    def name_claim(self) -> NameClaim:
        return NameClaim(self.claimed_since, self.node_id, self.name)

    def signed_body(self) -> bytes:
        _check_common(self.public_key, self.sequence, self.issued_at, self.expires_at)
        _check_u64(self.claimed_since)
        if not self.name:
            raise RecordError(RefusalReason.BAD_NAME, "a name record needs a name")
        return b"".join(
            [
                _NAME_HEADER.pack(
                    NAME_RECORD_TYPE,
                    RECORD_VERSION,
                    self.public_key,
                    self.sequence,
                    self.issued_at,
                    self.expires_at,
                    self.claimed_since,
                ),
                _encode_name(self.name, self.public_key),
                _encode_extensions(self.extensions),
            ]
        )

    def encode(self) -> bytes:
        if len(self.signature) != SIGNATURE_SIZE:
            raise RecordError(RefusalReason.MALFORMED, "signature must be 64 bytes")
        data = self.signed_body() + self.signature
        if len(data) > MAX_RECORD_SIZE:
            raise RecordError(RefusalReason.OVERSIZED, f"{len(data)} > {MAX_RECORD_SIZE} bytes")
        return data

    def signed(self, identity: Identity) -> NameRecord:
        if identity.public_key != self.public_key:
            raise ValueError("a name record can only be signed by its holder's key")
        message = _NAME_SIGNING_LABEL + self.signed_body()
        return replace(self, signature=identity.sign(message))

    def signature_valid(self) -> bool:
        return verify_signature(
            self.public_key, _NAME_SIGNING_LABEL + self.signed_body(), self.signature
        )


Record = NodeRecord | NameRecord


def name_key(name: str) -> bytes:
    """The 20-byte DHT key of a name record: a hash of the normalized name.

    Raises LabelError for a name that is not a valid label.
    """
    normalized = normalize_label(name)
    return hashlib.blake2b(
        normalized.encode("ascii"), digest_size=NODE_ID_SIZE, person=b"gossipmesh-name"
    ).digest()


def record_key(record: Record) -> bytes:
    """The DHT key a record belongs under: node id, or hash of the name."""
    if isinstance(record, NodeRecord):
        return record.node_id
    return name_key(record.name)


# --- encoding helpers --------------------------------------------------------


def _check_u64(value: int) -> None:
    if not 0 <= value <= _U64_MAX:
        raise RecordError(RefusalReason.MALFORMED, "integer field out of range")


def _check_common(public_key: bytes, sequence: int, issued_at: int, expires_at: int) -> None:
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise RecordError(RefusalReason.MALFORMED, "public key must be 32 bytes")
    for value in (sequence, issued_at, expires_at):
        _check_u64(value)
    if expires_at <= issued_at:
        raise RecordError(RefusalReason.MALFORMED, "expires_at must be after issued_at")


def _encode_name(name: str, public_key: bytes) -> bytes:
    if name:
        try:
            normalized = check_claimable(name, node_id_from_public_key(public_key))
        except LabelError as exc:
            raise RecordError(RefusalReason.BAD_NAME, str(exc)) from None
        if normalized != name:
            raise RecordError(RefusalReason.BAD_NAME, "name must be normalized (lower case)")
    raw = name.encode("ascii")
    return _U8.pack(len(raw)) + raw


def _encode_extensions(extensions: Sequence[tuple[int, bytes]]) -> bytes:
    if len(extensions) > MAX_EXTENSIONS:
        raise RecordError(RefusalReason.OVERSIZED, f"more than {MAX_EXTENSIONS} extensions")
    previous = -1
    parts = [_U8.pack(len(extensions))]
    for kind, value in extensions:
        if not previous < kind <= 255:
            raise RecordError(RefusalReason.MALFORMED, "extension types must strictly increase")
        if len(value) > MAX_RECORD_SIZE:
            raise RecordError(RefusalReason.OVERSIZED, "extension too long")
        previous = kind
        parts.append(_U8.pack(kind) + _U16.pack(len(value)) + value)
    return b"".join(parts)


class _Reader:
    """Bounds-checked cursor: running off the end is MALFORMED, never IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise RecordError(RefusalReason.MALFORMED, "truncated")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def name(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise RecordError(RefusalReason.BAD_NAME, "name is not ASCII") from None

    def endpoint(self) -> Endpoint:
        kind = self.u8()
        body = _Reader(self.take(self.u8()))
        family = body.u8()
        if family == 4:
            host = str(ipaddress.IPv4Address(body.take(4)))
        elif family == 6:
            host = str(ipaddress.IPv6Address(body.take(16)))
        else:
            raise RecordError(RefusalReason.MALFORMED, "endpoint family must be 4 or 6")
        port = body.u16()
        return Endpoint(kind, host, port, body.data[body.offset :])

    def extensions(self) -> tuple[tuple[int, bytes], ...]:
        count = self.u8()
        return tuple((self.u8(), self.take(self.u16())) for _ in range(count))


def _check_header(data: bytes, record_type: int) -> None:
    if len(data) > MAX_RECORD_SIZE:
        raise RecordError(RefusalReason.OVERSIZED, f"{len(data)} > {MAX_RECORD_SIZE} bytes")
    if len(data) < 2 or data[0] != record_type:
        raise RecordError(RefusalReason.MALFORMED, "not a record of this type")
    if data[1] != RECORD_VERSION:
        raise RecordError(RefusalReason.UNSUPPORTED_VERSION, f"version {data[1]}")


def _finish(record: Record, data: bytes) -> None:
    """Only one encoding per record value: re-encoding must give the same bytes."""
    if record.encode() != data:
        raise RecordError(RefusalReason.MALFORMED, "not canonically encoded")


def decode_node_record(data: bytes) -> NodeRecord:
    """Parse a node record. Any bytes give a NodeRecord or a RecordError (signature not checked)."""
    _check_header(data, NODE_RECORD_TYPE)
    reader = _Reader(bytes(data))
    fields = _NODE_HEADER.unpack(reader.take(_NODE_HEADER.size))
    name = reader.name()
    name_claimed_since = reader.u64()
    endpoints = tuple(reader.endpoint() for _ in range(reader.u8()))
    extensions = reader.extensions()
    signature = reader.take(SIGNATURE_SIZE)
    if reader.offset != len(data):
        raise RecordError(RefusalReason.MALFORMED, "trailing bytes")
    record = NodeRecord(
        public_key=fields[2],
        sequence=fields[3],
        issued_at=fields[4],
        expires_at=fields[5],
        ipv4_counter=fields[6],
        ipv4_held_since=fields[7],
        flags=fields[8],
        name=name,
        name_claimed_since=name_claimed_since,
        endpoints=endpoints,
        extensions=extensions,
        signature=signature,
    )
    _finish(record, data)
    return record


def decode_name_record(data: bytes) -> NameRecord:
    """Parse a name record. Any bytes give a NameRecord or a RecordError (signature not checked)."""
    _check_header(data, NAME_RECORD_TYPE)
    reader = _Reader(bytes(data))
    fields = _NAME_HEADER.unpack(reader.take(_NAME_HEADER.size))
    name = reader.name()
    extensions = reader.extensions()
    signature = reader.take(SIGNATURE_SIZE)
    if reader.offset != len(data):
        raise RecordError(RefusalReason.MALFORMED, "trailing bytes")
    record = NameRecord(
        name=name,
        public_key=fields[2],
        sequence=fields[3],
        issued_at=fields[4],
        expires_at=fields[5],
        claimed_since=fields[6],
        extensions=extensions,
        signature=signature,
    )
    _finish(record, data)
    return record


def decode_record(data: bytes) -> Record:
    """Parse either record type by its first byte."""
    if not isinstance(data, bytes | bytearray):
        raise RecordError(RefusalReason.MALFORMED, "a record is bytes")
    if len(data) > MAX_RECORD_SIZE:
        raise RecordError(RefusalReason.OVERSIZED, f"{len(data)} > {MAX_RECORD_SIZE} bytes")
    if data[:1] == bytes([NODE_RECORD_TYPE]):
        return decode_node_record(bytes(data))
    if data[:1] == bytes([NAME_RECORD_TYPE]):
        return decode_name_record(bytes(data))
    raise RecordError(RefusalReason.MALFORMED, "unknown record type")


# --- validation -------------------------------------------------------------


def _name_rule_winner(a: NameRecord, b: NameRecord) -> NameRecord:
    """The names rule between two holders: earliest claimed_since, then lowest node id."""
    return min(a, b, key=lambda r: (r.claimed_since, r.node_id))


def validate(record: Record, now: float, held: Record | None = None) -> Record:
    """Return `record` if it may replace `held` at time `now` (Unix seconds), else RecordError.

    Checks, in order: size and structure (by re-encoding), signature, lifetime
    (expired; issued more than MAX_CLOCK_SKEW ahead of `now`; lifetime over
    MAX_LIFETIME), then against `held` (the record currently stored under the same
    key, ignored once expired): from the same key, the sequence must be newer
    (an identical copy is accepted as a refresh); a name record from another
    holder must win the names rule against an unexpired held claim.
    """
    encoded = record.encode()
    if not record.signature_valid():
        raise RecordError(RefusalReason.BAD_SIGNATURE)
    if record.expires_at <= now:
        raise RecordError(RefusalReason.EXPIRED, f"expired at {record.expires_at}")
    if record.issued_at > now + MAX_CLOCK_SKEW:
        raise RecordError(RefusalReason.FROM_FUTURE, f"issued at {record.issued_at}")
    if record.expires_at - record.issued_at > MAX_LIFETIME:
        raise RecordError(RefusalReason.LIFETIME_TOO_LONG)
    if held is None or held.expires_at <= now or type(held) is not type(record):
        return record
    if held.public_key == record.public_key:
        if record.sequence > held.sequence:
            return record
        if record.sequence == held.sequence and encoded == held.encode():
            return record
        raise RecordError(
            RefusalReason.STALE_SEQUENCE, f"sequence {record.sequence} <= held {held.sequence}"
        )
    if isinstance(record, NameRecord) and isinstance(held, NameRecord):
        if _name_rule_winner(record, held) is held:
            raise RecordError(RefusalReason.NAME_TAKEN, f"{record.name!r} is held by another key")
        return record
    raise RecordError(RefusalReason.WRONG_KEY, "another key's record is held under this key")
