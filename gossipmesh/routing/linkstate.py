"""Link-state records: a node's signed list of its direct links and their RTTs.

A record is identified by (origin, sequence), never by its bytes: tinc's
issue #486 (a hundred nodes out of memory after a simultaneous restart,
because a random nonce in each message defeated de-duplication) is the
failure this design avoids. A newer record from an origin replaces the older
one whatever its bytes; a record at or below the held sequence is dropped
before its signature is even checked.

Encoding (big-endian, canonical: one record has exactly one encoding)::

    format u8 = 1 | flags u8 | origin Ed25519 public key (32)
    | sequence u64 | issued_at u64 ms | expires_at u64 ms | link count u8
    | link count x (neighbour node id (20) | rtt u32 microseconds)
    | Ed25519 signature (64) over b"gossipmesh-linkstate-v1" + everything before it

Links are sorted by neighbour id without duplicates or self-links; at most
`MAX_LINKS` of them, so a record (at most 1,083 bytes) fits one control payload.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from gossipmesh.identity import (
    PUBLIC_KEY_SIZE,
    Identity,
    node_id_from_public_key,
    verify_signature,
)
from gossipmesh.routing.codec import NODE_ID_SIZE, MalformedMessage, Reader

RECORD_FORMAT = 1
SIGNING_CONTEXT = b"gossipmesh-linkstate-v1"
SIGNATURE_SIZE = 64
MAX_LINKS = 40
"""A node with more live links advertises the 40 with the lowest RTT."""
MAX_RTT_US = 60_000_000
"""An RTT above a minute is clamped: such a link is useless for routing anyway."""
MAX_TTL_MS = 24 * 3600 * 1000
"""A record may not claim to live longer than a day."""

FLAG_LEAVING = 0x01
"""The origin is leaving the mesh gracefully; its record carries no links."""
KNOWN_FLAGS = FLAG_LEAVING

_HEADER = struct.Struct("!BB32sQQQB")
_LINK = struct.Struct("!20sI")
MAX_RECORD_SIZE = _HEADER.size + MAX_LINKS * _LINK.size + SIGNATURE_SIZE


@dataclass(frozen=True, order=True)
class Link:
    """One direct link as its origin measured it."""

    neighbour: bytes
    rtt_us: int


@dataclass(frozen=True)
class LinkStateRecord:
    """A signed statement by `origin_public_key` of its direct links at one moment."""

    origin_public_key: bytes
    sequence: int
    issued_at_ms: int
    expires_at_ms: int
    links: tuple[Link, ...]
    flags: int = 0
    signature: bytes = field(default=b"", compare=False)

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        sequence: int,
        issued_at_ms: int,
        expires_at_ms: int,
        links: Iterable[Link],
        leaving: bool = False,
    ) -> LinkStateRecord:
        """Build and sign a record; links are sorted, capped and clamped here."""
        own_id = identity.node_id
        by_neighbour = {link.neighbour: link for link in links if link.neighbour != own_id}
        chosen = sorted(by_neighbour.values(), key=lambda link: (link.rtt_us, link.neighbour))
        clamped = [
            Link(link.neighbour, max(0, min(MAX_RTT_US, link.rtt_us)))
            for link in chosen[:MAX_LINKS]
        ]
        unsigned = cls(
            origin_public_key=identity.public_key,
            sequence=sequence,
            issued_at_ms=issued_at_ms,
            expires_at_ms=expires_at_ms,
            links=() if leaving else tuple(sorted(clamped)),
            flags=FLAG_LEAVING if leaving else 0,
        )
        unsigned._check()
        signature = identity.sign(SIGNING_CONTEXT + unsigned._body())
        return cls(
            unsigned.origin_public_key,
            sequence,
            issued_at_ms,
            expires_at_ms,
            unsigned.links,
            unsigned.flags,
            signature,
        )

    @cached_property
    def origin(self) -> bytes:
        """The origin's node id (hash of its public key)."""
        return node_id_from_public_key(self.origin_public_key)

    @property
    def leaving(self) -> bool:
        return bool(self.flags & FLAG_LEAVING)

    def neighbours(self) -> Mapping[bytes, int]:
        """Neighbour node id -> RTT in microseconds (built once per record: do not modify)."""
        return self._neighbours

    @cached_property
    def _neighbours(self) -> dict[bytes, int]:
        return {link.neighbour: link.rtt_us for link in self.links}

    def _body(self) -> bytes:
        parts = [
            _HEADER.pack(
                RECORD_FORMAT,
                self.flags,
                self.origin_public_key,
                self.sequence,
                self.issued_at_ms,
                self.expires_at_ms,
                len(self.links),
            )
        ]
        parts.extend(_LINK.pack(link.neighbour, link.rtt_us) for link in self.links)
        return b"".join(parts)

    def encode(self) -> bytes:
        return self._body() + self.signature

    def verify(self) -> bool:
        """True when the signature is the origin's over this exact content."""
        return verify_signature(
            self.origin_public_key, SIGNING_CONTEXT + self._body(), self.signature
        )

    def _check(self) -> None:
        """The structural rules decode enforces, so encode never emits what decode refuses."""
        if len(self.origin_public_key) != PUBLIC_KEY_SIZE:
            raise MalformedMessage("origin public key must be 32 bytes")
        for name, value in (
            ("sequence", self.sequence),
            ("issued_at", self.issued_at_ms),
            ("expires_at", self.expires_at_ms),
        ):
            if not 0 <= value < 2**64:
                raise MalformedMessage(f"{name} out of range")
        if self.flags & ~KNOWN_FLAGS:
            raise MalformedMessage("unknown record flags")
        if self.expires_at_ms < self.issued_at_ms:
            raise MalformedMessage("record expires before it is issued")
        if self.expires_at_ms - self.issued_at_ms > MAX_TTL_MS:
            raise MalformedMessage("record lifetime exceeds a day")
        if len(self.links) > MAX_LINKS:
            raise MalformedMessage(f"more than {MAX_LINKS} links")
        if self.leaving and self.links:
            raise MalformedMessage("a leaving record carries no links")
        previous = b""
        for link in self.links:
            if len(link.neighbour) != NODE_ID_SIZE:
                raise MalformedMessage("neighbour id must be 20 bytes")
            if link.neighbour <= previous:
                raise MalformedMessage("links not strictly sorted by neighbour id")
            if not 0 <= link.rtt_us <= MAX_RTT_US:
                raise MalformedMessage("link RTT out of range")
            previous = link.neighbour
        if any(link.neighbour == self.origin for link in self.links):
            raise MalformedMessage("a record lists a link to its own origin")

    @staticmethod
    def peek(data: bytes) -> tuple[bytes, int] | None:
        """(origin node id, sequence) from an encoded record's header, without parsing the rest.

        Enough to refuse a copy at or below the held sequence before decoding
        it: a flood hands each node every record once per neighbour.
        """
        if len(data) < _HEADER.size or data[0] != RECORD_FORMAT:
            return None
        _, _, public_key, sequence, _, _, _ = _HEADER.unpack_from(data)
        return node_id_from_public_key(public_key), sequence

    @classmethod
    def decode(cls, data: bytes) -> LinkStateRecord:
        """Parse a record's bytes (signature not checked: call `verify`).

        Any input gives a record or `MalformedMessage`; an accepted input
        re-encodes to exactly the same bytes.
        """
        if len(data) > MAX_RECORD_SIZE:
            raise MalformedMessage("record too large")
        reader = Reader(data)
        header = reader.take(_HEADER.size)
        fmt, flags, public_key, sequence, issued, expires, count = _HEADER.unpack(header)
        if fmt != RECORD_FORMAT:
            raise MalformedMessage(f"unsupported record format {fmt}")
        if count > MAX_LINKS:
            raise MalformedMessage(f"more than {MAX_LINKS} links")
        links = tuple(Link(*_LINK.unpack(reader.take(_LINK.size))) for _ in range(count))
        signature = reader.take(SIGNATURE_SIZE)
        reader.finish()
        record = cls(public_key, sequence, issued, expires, links, flags, signature)
        record._check()
        return record
