"""The revocation list: certificates (by serial) and node keys the authority has withdrawn.

It travels as a `SignedDocument` of kind REVOCATIONS, so it spreads like the
policy: a node keeps the newest version it has verified, and a replayed older
list can never bring a revoked certificate back. Revoking a node key revokes
every certificate ever issued to it, which is what a stolen machine calls for.

Payload (big-endian, one encoding per value):

    u8 format=1  u32 serial_count  { u64 serial }*  (strictly increasing)
    u32 key_count  { 32s public_key }*  (strictly increasing)

The file the operator keeps is the encoded document itself (binary): it
carries its own kind, authority, version and signature, so a truncated,
altered or foreign file is recognised as such.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Final

from gossipmesh.errors import ConfigError
from gossipmesh.identity import PUBLIC_KEY_SIZE
from gossipmesh.statefiles import write_atomically
from gossipmesh.trust.certificate import NodeCertificate
from gossipmesh.trust.document import (
    MAX_DOCUMENT_SIZE,
    DocumentError,
    DocumentKind,
    DocumentRefusal,
    SignedDocument,
    Signer,
    decode_document,
    sign_document,
)

REVOCATIONS_FORMAT: Final = 1
MAX_REVOCATIONS: Final = 4096
"""Most entries (serials and keys together) in one list. Every node holds and
gossips the whole list; at 32 bytes a key, 4096 entries stay under 130 KiB,
half of MAX_DOCUMENT_SIZE. Revoking a node's key rather than each of its
serials keeps the list short."""

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U64_MAX: Final = (1 << 64) - 1


class RevocationError(DocumentError):
    """A revocation payload that cannot be used (a MALFORMED document)."""

    def __init__(self, detail: str) -> None:
        super().__init__(DocumentRefusal.MALFORMED, f"revocation list: {detail}")


@dataclass(frozen=True)
class RevocationList:
    serials: frozenset[int] = frozenset()
    public_keys: frozenset[bytes] = frozenset()
    """Node keys all of whose certificates are revoked."""

    def __len__(self) -> int:
        return len(self.serials) + len(self.public_keys)

    def revokes(self, cert: NodeCertificate) -> bool:
        return cert.serial in self.serials or cert.node_public_key in self.public_keys

    def with_added(
        self, serials: Iterable[int] = (), public_keys: Iterable[bytes] = ()
    ) -> RevocationList:
        """This list plus more entries; RevocationError when one is invalid or it grows too long."""
        added = RevocationList(
            self.serials | frozenset(serials), self.public_keys | frozenset(public_keys)
        )
        added.encode_payload()
        return added

    def encode_payload(self) -> bytes:
        if len(self) > MAX_REVOCATIONS:
            raise RevocationError(f"{len(self)} entries, at most {MAX_REVOCATIONS}")
        if any(isinstance(s, bool) or not 0 <= s <= _U64_MAX for s in self.serials):
            raise RevocationError("a serial is out of range")
        if any(len(key) != PUBLIC_KEY_SIZE for key in self.public_keys):
            raise RevocationError("a public key is not 32 bytes")
        return b"".join(
            [
                bytes([REVOCATIONS_FORMAT]),
                _U32.pack(len(self.serials)),
                *(_U64.pack(serial) for serial in sorted(self.serials)),
                _U32.pack(len(self.public_keys)),
                *sorted(self.public_keys),
            ]
        )


def decode_revocations(payload: bytes) -> RevocationList:
    """Parse a REVOCATIONS document's payload; RevocationError when it is not canonical."""
    if payload[:1] != bytes([REVOCATIONS_FORMAT]):
        raise RevocationError(f"unknown format {payload[0] if payload else 'none'}")
    serials, offset = _entries(payload, 1, _U64.size, MAX_REVOCATIONS)
    keys, offset = _entries(payload, offset, PUBLIC_KEY_SIZE, MAX_REVOCATIONS - len(serials))
    if offset != len(payload):
        raise RevocationError("trailing bytes")
    return RevocationList(
        frozenset(int.from_bytes(serial, "big") for serial in serials), frozenset(keys)
    )


def _entries(payload: bytes, offset: int, size: int, budget: int) -> tuple[list[bytes], int]:
    """`u32 count` then `count` fixed-size entries; the count is bounded before any work.

    Fixed-width big-endian entries sort as bytes as they do as numbers, so one
    check covers serials and keys: strictly increasing means sorted and unique.
    """
    if offset + _U32.size > len(payload):
        raise RevocationError("truncated")
    count: int = _U32.unpack_from(payload, offset)[0]
    if count > budget:
        raise RevocationError(f"more than {MAX_REVOCATIONS} entries")
    start = offset + _U32.size
    end = start + count * size
    if end > len(payload):
        raise RevocationError("truncated")
    entries = [payload[i : i + size] for i in range(start, end, size)]
    if any(a >= b for a, b in pairwise(entries)):
        raise RevocationError("entries are not sorted and unique")
    return entries, end


def sign_revocations(
    authority: Signer, revocations: RevocationList, version: int, issued_at: int
) -> SignedDocument:
    return sign_document(
        authority, DocumentKind.REVOCATIONS, version, issued_at, revocations.encode_payload()
    )


def revocations_of(document: SignedDocument, authority_public_key: bytes) -> RevocationList:
    """The list a document carries, once it is verified as that authority's (DocumentError)."""
    document.verify(authority_public_key, DocumentKind.REVOCATIONS)
    return decode_revocations(document.payload)


def load_revocation_file(path: str | os.PathLike[str]) -> SignedDocument | None:
    """The revocation document in `path`, or None when there is no file yet.

    Structure and kind are checked here (ConfigError naming the file); the
    signature is for `revocations_of` with the network's authority key.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_DOCUMENT_SIZE + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a revocation list") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read revocation list: {exc.strerror}") from None
    try:
        document = decode_document(data)
        if document.kind is not DocumentKind.REVOCATIONS:
            raise DocumentError(
                DocumentRefusal.WRONG_KIND, f"a {document.kind.name.lower()} document"
            )
        decode_revocations(document.payload)
    except DocumentError as exc:
        raise ConfigError(f"{path}: not a usable revocation list: {exc}") from None
    return document


def write_revocation_file(path: str | os.PathLike[str], document: SignedDocument) -> None:
    """Replace the file atomically: a crash leaves the old list or the new, never half."""
    if document.kind is not DocumentKind.REVOCATIONS:
        raise ValueError("only a REVOCATIONS document belongs in a revocation file")
    write_atomically(Path(path), document.encode(), mode=0o644)
