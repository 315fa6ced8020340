"""Versioned documents signed by the network authority: the policy and the revocation list.

Both spread the same way: every node keeps the newest version it has verified
for each kind, refuses older ones and anything not signed by the authority,
and passes newer ones on. So they share one envelope and one codec.

Encoding (big-endian; the signature covers a domain label and every byte
before it):

    u8 format=1  u8 kind  32s authority_public_key  u64 version  u64 issued_at
    u32 payload_length  payload  64s signature
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Final, Protocol

from gossipmesh.errors import GossipmeshError
from gossipmesh.identity import PUBLIC_KEY_SIZE, verify_signature

DOCUMENT_FORMAT: Final = 1
MAX_DOCUMENT_SIZE: Final = 256 * 1024
"""Largest encoded document accepted: a policy of thousands of rules still fits."""
SIGNATURE_SIZE: Final = 64
DIGEST_SIZE: Final = 16

_SIGNING_LABEL: Final = b"gossipmesh signed document\x00"
_HEADER = struct.Struct(">BB32sQQI")
_U64_MAX: Final = (1 << 64) - 1


class DocumentKind(IntEnum):
    POLICY = 1
    REVOCATIONS = 2


class DocumentRefusal(StrEnum):
    """Why a document was refused; counters and logs use these names."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    WRONG_KIND = "wrong_kind"
    WRONG_AUTHORITY = "wrong_authority"
    BAD_SIGNATURE = "bad_signature"
    NOT_NEWER = "not_newer"


class DocumentError(GossipmeshError):
    """A signed document that cannot be used; `reason` says why."""

    def __init__(self, reason: DocumentRefusal, detail: str = "") -> None:
        super().__init__(
            f"signed document refused: {reason.value}" + (f" ({detail})" if detail else "")
        )
        self.reason = reason


class Signer(Protocol):
    """What signs documents: the authority key (an `Identity` has this shape)."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class SignedDocument:
    kind: DocumentKind
    authority_public_key: bytes
    version: int
    issued_at: int
    payload: bytes
    signature: bytes = field(default=bytes(SIGNATURE_SIZE), repr=False)

    def signed_body(self) -> bytes:
        if len(self.authority_public_key) != PUBLIC_KEY_SIZE:
            raise DocumentError(DocumentRefusal.MALFORMED, "authority key must be 32 bytes")
        if not (0 <= self.version <= _U64_MAX and 0 <= self.issued_at <= _U64_MAX):
            raise DocumentError(DocumentRefusal.MALFORMED, "version or issued_at out of range")
        header = _HEADER.pack(
            DOCUMENT_FORMAT,
            int(self.kind),
            self.authority_public_key,
            self.version,
            self.issued_at,
            len(self.payload),
        )
        return header + self.payload

    def encode(self) -> bytes:
        if len(self.signature) != SIGNATURE_SIZE:
            raise DocumentError(DocumentRefusal.MALFORMED, "signature must be 64 bytes")
        data = self.signed_body() + self.signature
        if len(data) > MAX_DOCUMENT_SIZE:
            raise DocumentError(
                DocumentRefusal.OVERSIZED, f"{len(data)} > {MAX_DOCUMENT_SIZE} bytes"
            )
        return data

    @property
    def digest(self) -> bytes:
        """A short hash of the whole encoding: tells two copies of one version apart."""
        return hashlib.blake2b(self.encode(), digest_size=DIGEST_SIZE).digest()

    def signed_by(self, signer: Signer) -> SignedDocument:
        if signer.public_key != self.authority_public_key:
            raise ValueError("a document is signed by the authority it names")
        return replace(self, signature=signer.sign(_SIGNING_LABEL + self.signed_body()))

    def verify(self, authority_public_key: bytes, kind: DocumentKind) -> None:
        """Raise DocumentError unless this is a `kind` document signed by that authority."""
        if self.kind != kind:
            raise DocumentError(DocumentRefusal.WRONG_KIND, f"{self.kind.name} is not {kind.name}")
        if self.authority_public_key != authority_public_key:
            raise DocumentError(DocumentRefusal.WRONG_AUTHORITY)
        if not verify_signature(
            authority_public_key, _SIGNING_LABEL + self.signed_body(), self.signature
        ):
            raise DocumentError(DocumentRefusal.BAD_SIGNATURE)


def sign_document(
    signer: Signer, kind: DocumentKind, version: int, issued_at: int, payload: bytes
) -> SignedDocument:
    return SignedDocument(kind, signer.public_key, version, issued_at, payload).signed_by(signer)


def decode_document(data: bytes) -> SignedDocument:
    """Parse (not verify) an encoded document; DocumentError when it is not one."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise DocumentError(DocumentRefusal.OVERSIZED, f"{len(data)} > {MAX_DOCUMENT_SIZE} bytes")
    if len(data) < _HEADER.size + SIGNATURE_SIZE:
        raise DocumentError(DocumentRefusal.MALFORMED, "truncated")
    fmt, kind, authority, version, issued_at, length = _HEADER.unpack_from(data)
    if fmt != DOCUMENT_FORMAT:
        raise DocumentError(DocumentRefusal.MALFORMED, f"unknown format {fmt}")
    try:
        document_kind = DocumentKind(kind)
    except ValueError:
        raise DocumentError(DocumentRefusal.WRONG_KIND, f"unknown kind {kind}") from None
    if len(data) != _HEADER.size + length + SIGNATURE_SIZE:
        raise DocumentError(DocumentRefusal.MALFORMED, "length does not match")
    payload = data[_HEADER.size : _HEADER.size + length]
    return SignedDocument(
        document_kind, authority, version, issued_at, payload, data[-SIGNATURE_SIZE:]
    )


def accept_newer(
    candidate: SignedDocument, held: SignedDocument | None, authority_public_key: bytes
) -> SignedDocument:
    """`candidate` if it is a valid replacement for `held` (same kind), else DocumentError.

    A copy of the held version is refused as NOT_NEWER too: callers count it
    as a duplicate, not an attack. Versions only move forward, so a replayed
    older policy or revocation list can never undo a newer one.
    """
    kind = held.kind if held is not None else candidate.kind
    candidate.verify(authority_public_key, kind)
    if held is not None and candidate.version <= held.version:
        raise DocumentError(
            DocumentRefusal.NOT_NEWER, f"version {candidate.version} <= held {held.version}"
        )
    return candidate
