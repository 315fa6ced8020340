"""Identity: pinned known answers, key-file refusals and the key-file parser's contract."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipmesh.errors import KeyFileError
from gossipmesh.identity import (
    KEY_FILE_HEADER,
    Identity,
    encode_key_file,
    encode_public_key,
    load_key_file,
    load_or_create_key_file,
    parse_key_file,
    verify_signature,
    write_key_file,
    x25519_public_from_ed25519,
)

# Pinned: a change here moves every node's id and addresses. Do not update
# these values to make a test pass; a change needs a migration story.
KNOWN = [
    (
        bytes(32),
        "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=",
        "c9c2ecf03b6351e1215cdd00b3043ab8194873ae",
        "5bf55c73b82ebe22be80f3430667af570fae2556a6415e6b30d4065300aa947d",
    ),
    (
        bytes(range(32)),
        "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
        "37071882efc340aee4077b3e9872edf6a3725d0d",
        "4701d08488451f545a409fb58ae3e58581ca40ac3f7f114698cd71deac73ca01",
    ),
]


@pytest.mark.parametrize(("seed", "public_b64", "node_id_hex", "x25519_hex"), KNOWN)
def test_known_identities(seed: bytes, public_b64: str, node_id_hex: str, x25519_hex: str) -> None:
    identity = Identity.from_seed(seed)
    assert encode_public_key(identity.public_key) == public_b64
    assert identity.node_id.hex() == node_id_hex
    assert len(identity.node_id) == 20
    assert identity.x25519_public_key.hex() == x25519_hex


def test_x25519_private_and_public_keys_belong_together() -> None:
    identity = Identity.generate()
    derived_public = nacl.bindings.crypto_scalarmult_base(identity.x25519_private_key)
    assert derived_public == identity.x25519_public_key
    assert x25519_public_from_ed25519(identity.public_key) == identity.x25519_public_key


def test_signatures_verify_only_for_their_message_and_key() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    signature = alice.sign(b"record")
    assert verify_signature(alice.public_key, b"record", signature)
    assert not verify_signature(alice.public_key, b"recorc", signature)
    assert not verify_signature(bob.public_key, b"record", signature)
    assert not verify_signature(alice.public_key, b"record", signature[:-1])


def test_written_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "node.key"
    write_key_file(path, identity)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path).seed == identity.seed


def test_write_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, Identity.generate())
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, Identity.generate())
    assert path.read_bytes() == before


def test_load_or_create_creates_once_then_loads(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, created = load_or_create_key_file(path)
    again, created_again = load_or_create_key_file(path)
    assert created and not created_again
    assert first.seed == again.seed


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666])
def test_permissive_modes_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "k", encode_key_file(Identity.generate()), mode)
    with pytest.raises(KeyFileError, match="too open"):
        load_key_file(path)


def test_directory_missing_and_symlink_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="directory"):
        load_key_file(tmp_path)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key_file(tmp_path / "absent")
    target = _write(tmp_path / "real", encode_key_file(Identity.generate()))
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_key_file(tmp_path / "link")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a gossipmesh key file"),
        (KEY_FILE_HEADER.encode() + b"\n", "truncated"),
        (encode_key_file(Identity.generate())[:-10], "corrupt or truncated"),
        (KEY_FILE_HEADER.encode() + b"\n!!!not base64!!!\n", "not valid base64"),
        (b"\xff\xfe garbage", "not ASCII"),
        (encode_key_file(Identity.generate()) + b"extra\n", "unexpected content"),
    ],
)
def test_malformed_key_files_refused(tmp_path: Path, data: bytes, reason: str) -> None:
    path = _write(tmp_path / "k", data)
    with pytest.raises(KeyFileError, match=reason):
        load_key_file(path)


@given(st.binary(max_size=200))
def test_any_bytes_give_a_key_or_the_documented_error(data: bytes) -> None:
    try:
        identity = parse_key_file(data)
    except KeyFileError:
        return
    assert len(identity.public_key) == 32


@given(st.binary(min_size=32, max_size=32))
def test_encoding_round_trips(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    assert parse_key_file(encode_key_file(identity)).seed == seed
