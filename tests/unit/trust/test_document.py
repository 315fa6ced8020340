"""Signed documents: only the authority's, only newer, and every byte covered."""

from __future__ import annotations

import pytest

from gossipmesh.identity import Identity
from gossipmesh.trust.document import (
    MAX_DOCUMENT_SIZE,
    DocumentError,
    DocumentKind,
    DocumentRefusal,
    accept_newer,
    decode_document,
    sign_document,
)

AUTHORITY = Identity.from_seed(bytes(range(32)))
OTHER = Identity.from_seed(bytes(32))


def _policy(version: int, signer: Identity = AUTHORITY) -> bytes:
    return sign_document(signer, DocumentKind.POLICY, version, 1_700_000_000, b"rules").encode()


def test_round_trip_and_verify() -> None:
    document = decode_document(_policy(3))
    assert (document.kind, document.version, document.payload) == (DocumentKind.POLICY, 3, b"rules")
    document.verify(AUTHORITY.public_key, DocumentKind.POLICY)


@pytest.mark.parametrize("index", [1, 10, 40, 50, 60, 70])
def test_any_flipped_byte_is_refused(index: int) -> None:
    data = bytearray(_policy(3))
    data[index] ^= 0x01
    with pytest.raises(DocumentError) as caught:
        decode_document(bytes(data)).verify(AUTHORITY.public_key, DocumentKind.POLICY)
    assert caught.value.reason in {
        DocumentRefusal.BAD_SIGNATURE,
        DocumentRefusal.WRONG_KIND,
        DocumentRefusal.WRONG_AUTHORITY,
        DocumentRefusal.MALFORMED,
    }


def test_another_authority_is_refused() -> None:
    with pytest.raises(DocumentError) as caught:
        decode_document(_policy(3, OTHER)).verify(AUTHORITY.public_key, DocumentKind.POLICY)
    assert caught.value.reason is DocumentRefusal.WRONG_AUTHORITY


def test_a_policy_is_not_a_revocation_list() -> None:
    with pytest.raises(DocumentError) as caught:
        decode_document(_policy(3)).verify(AUTHORITY.public_key, DocumentKind.REVOCATIONS)
    assert caught.value.reason is DocumentRefusal.WRONG_KIND


def test_only_newer_versions_replace() -> None:
    held = decode_document(_policy(3))
    assert accept_newer(decode_document(_policy(4)), held, AUTHORITY.public_key).version == 4
    for version in (2, 3):
        with pytest.raises(DocumentError) as caught:
            accept_newer(decode_document(_policy(version)), held, AUTHORITY.public_key)
        assert caught.value.reason is DocumentRefusal.NOT_NEWER


@pytest.mark.parametrize("data", [b"", b"\x01", _policy(1)[:-1], _policy(1) + b"x"])
def test_truncated_or_padded_is_malformed(data: bytes) -> None:
    with pytest.raises(DocumentError) as caught:
        decode_document(data)
    assert caught.value.reason is DocumentRefusal.MALFORMED


def test_oversized_is_refused_before_parsing() -> None:
    with pytest.raises(DocumentError) as caught:
        decode_document(bytes(MAX_DOCUMENT_SIZE + 1))
    assert caught.value.reason is DocumentRefusal.OVERSIZED
