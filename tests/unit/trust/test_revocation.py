"""The revocation list: by serial or by key, only the authority's, only forward."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.errors import ConfigError
from gossipmesh.identity import Identity
from gossipmesh.trust.certificate import (
    CertificateError,
    CertificateRefusal,
    NodeCertificate,
    sign_certificate,
)
from gossipmesh.trust.document import (
    DocumentError,
    DocumentKind,
    DocumentRefusal,
    accept_newer,
    decode_document,
    sign_document,
)
from gossipmesh.trust.revocation import (
    MAX_REVOCATIONS,
    RevocationError,
    RevocationList,
    decode_revocations,
    load_revocation_file,
    revocations_of,
    sign_revocations,
    write_revocation_file,
)

AUTHORITY = Identity.from_seed(bytes(range(32)))
OTHER_AUTHORITY = Identity.from_seed(bytes(32))
NODE = Identity.from_seed(bytes(range(1, 33)))
OTHER_NODE = Identity.from_seed(bytes(range(2, 34)))
NOW = 1_700_000_000


def _cert(node: Identity = NODE, serial: int = 10) -> NodeCertificate:
    return sign_certificate(
        AUTHORITY, node.public_key, "", (), None, (), False, NOW, NOW + 3600, serial=serial
    )


LIST = RevocationList(frozenset({10, 3}), frozenset({OTHER_NODE.public_key}))


def test_revokes_by_serial_and_by_key() -> None:
    assert LIST.revokes(_cert(serial=10))
    assert not LIST.revokes(_cert(serial=11))
    assert LIST.revokes(_cert(OTHER_NODE, serial=11))
    assert not RevocationList().revokes(_cert())


def test_a_revoked_certificate_fails_its_check() -> None:
    with pytest.raises(CertificateError) as caught:
        _cert(serial=3).check(AUTHORITY.public_key, NODE.public_key, NOW, revocations=LIST)
    assert caught.value.reason is CertificateRefusal.REVOKED
    _cert(serial=4).check(AUTHORITY.public_key, NODE.public_key, NOW, revocations=LIST)


def test_payload_round_trip_is_canonical() -> None:
    payload = LIST.encode_payload()
    assert decode_revocations(payload) == LIST
    same = RevocationList(frozenset({3, 10}), frozenset({OTHER_NODE.public_key}))
    assert same.encode_payload() == payload
    assert decode_revocations(RevocationList().encode_payload()) == RevocationList()


def test_with_added_keeps_the_old_entries_and_is_a_new_value() -> None:
    grown = LIST.with_added(serials=[5, 10], public_keys=[NODE.public_key])
    assert grown.serials == {3, 5, 10}
    assert grown.public_keys == {NODE.public_key, OTHER_NODE.public_key}
    assert len(grown) == 5
    assert LIST.serials == {3, 10}


@pytest.mark.parametrize(
    ("serials", "keys"),
    [([-1], []), ([1 << 64], []), ([], [bytes(31)]), (range(MAX_REVOCATIONS + 1), [])],
)
def test_with_added_refuses_bad_entries_and_too_many(serials: list[int], keys: list[bytes]) -> None:
    with pytest.raises(RevocationError):
        RevocationList().with_added(serials=serials, public_keys=keys)


def test_the_bound_counts_serials_and_keys_together() -> None:
    full = RevocationList(frozenset(range(MAX_REVOCATIONS - 1)), frozenset({NODE.public_key}))
    assert decode_revocations(full.encode_payload()) == full
    with pytest.raises(RevocationError, match=f"at most {MAX_REVOCATIONS}"):
        full.with_added(public_keys=[OTHER_NODE.public_key])


def _payload(serials: list[int], keys: list[bytes], count: int | None = None) -> bytes:
    return (
        b"\x01"
        + struct.pack(">I", len(serials) if count is None else count)
        + b"".join(struct.pack(">Q", s) for s in serials)
        + struct.pack(">I", len(keys))
        + b"".join(keys)
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x02" + _payload([], [])[1:],
        _payload([5, 3], []),
        _payload([3, 3], []),
        _payload([], sorted([OTHER_NODE.public_key, NODE.public_key], reverse=True)),
        _payload([1], [], count=2),
        _payload([1], [], count=0xFFFFFFFF),
        _payload([1], []) + b"\x00",
        _payload([1], [])[:-1],
    ],
    ids=[
        "empty",
        "unknown-format",
        "unsorted-serials",
        "duplicate-serial",
        "unsorted-keys",
        "count-past-the-end",
        "huge-count",
        "trailing",
        "truncated",
    ],
)
def test_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(RevocationError) as caught:
        decode_revocations(payload)
    assert caught.value.reason is DocumentRefusal.MALFORMED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_payload_gives_a_list_or_a_refusal(payload: bytes) -> None:
    try:
        revocations = decode_revocations(payload)
    except RevocationError:
        return
    assert revocations.encode_payload() == payload


def test_signed_list_verifies_only_for_its_authority() -> None:
    document = decode_document(sign_revocations(AUTHORITY, LIST, 4, NOW).encode())
    assert document.kind is DocumentKind.REVOCATIONS
    assert revocations_of(document, AUTHORITY.public_key) == LIST
    with pytest.raises(DocumentError) as caught:
        revocations_of(document, OTHER_AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.WRONG_AUTHORITY
    forged = sign_revocations(OTHER_AUTHORITY, RevocationList(), 99, NOW)
    with pytest.raises(DocumentError):
        accept_newer(forged, document, AUTHORITY.public_key)


def test_an_older_list_cannot_undo_a_revocation() -> None:
    newer = sign_revocations(AUTHORITY, LIST, 5, NOW)
    replayed = sign_revocations(AUTHORITY, RevocationList(), 4, NOW - 60)
    with pytest.raises(DocumentError) as caught:
        accept_newer(replayed, newer, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.NOT_NEWER


def test_a_policy_is_not_a_revocation_list() -> None:
    policy = sign_document(AUTHORITY, DocumentKind.POLICY, 1, NOW, LIST.encode_payload())
    with pytest.raises(DocumentError) as caught:
        revocations_of(policy, AUTHORITY.public_key)
    assert caught.value.reason is DocumentRefusal.WRONG_KIND


# --- the file --------------------------------------------------------------------


def test_file_round_trip_and_missing_is_none(tmp_path: Path) -> None:
    path = tmp_path / "revocations.bin"
    assert load_revocation_file(path) is None
    document = sign_revocations(AUTHORITY, LIST, 2, NOW)
    write_revocation_file(path, document)
    assert load_revocation_file(path) == document
    write_revocation_file(path, sign_revocations(AUTHORITY, RevocationList(), 3, NOW))
    loaded = load_revocation_file(path)
    assert loaded is not None and loaded.version == 3
    assert [p.name for p in tmp_path.iterdir()] == ["revocations.bin"]


def test_a_damaged_or_foreign_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "revocations.bin"
    good = sign_revocations(AUTHORITY, LIST, 2, NOW).encode()
    for data, message in [
        (good[:-1], "length does not match"),
        (b"not a document", "truncated"),
        (sign_document(AUTHORITY, DocumentKind.POLICY, 1, NOW, b"x").encode(), "policy"),
        (sign_document(AUTHORITY, DocumentKind.REVOCATIONS, 1, NOW, b"\x01").encode(), "truncated"),
    ]:
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=message) as caught:
            load_revocation_file(path)
        assert str(caught.value).startswith(f"{path}: not a usable revocation list")
    with pytest.raises(ConfigError, match="is a directory"):
        load_revocation_file(tmp_path)


def test_only_revocations_are_written_to_the_file(tmp_path: Path) -> None:
    policy = sign_document(AUTHORITY, DocumentKind.POLICY, 1, NOW, b"x")
    with pytest.raises(ValueError, match="REVOCATIONS"):
        write_revocation_file(tmp_path / "revocations.bin", policy)
    assert not (tmp_path / "revocations.bin").exists()
