"""The authority key file and network.json: never confused with a node key, never altered."""

from __future__ import annotations

import base64
import ipaddress
import json
import stat
from pathlib import Path

import pytest

from gossipmesh.errors import ConfigError, KeyFileError
from gossipmesh.identity import Identity, load_key_file, write_key_file
from gossipmesh.membership import NetworkSecret
from gossipmesh.trust.authority import (
    AUTHORITY_KEY_FILE_HEADER,
    NETWORK_FILE_FORMAT,
    NetworkDescription,
    encode_network_file,
    load_authority_key,
    load_network_authority,
    load_network_file,
    parse_network_file,
    write_authority_key,
)

AUTHORITY = Identity.from_seed(bytes(range(32)))
OTHER = Identity.from_seed(bytes(32))
NETWORK = NetworkDescription(
    name="home",
    authority_public_key=AUTHORITY.public_key,
    ipv4_network=ipaddress.IPv4Network("10.20.0.0/16"),
    created_at=1_700_000_000,
)


def test_authority_key_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    write_authority_key(path, AUTHORITY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().splitlines()[0] == AUTHORITY_KEY_FILE_HEADER
    assert load_authority_key(path).public_key == AUTHORITY.public_key


def test_authority_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    write_authority_key(path, AUTHORITY)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_authority_key(path, OTHER)
    assert path.read_bytes() == before


def test_a_readable_authority_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    write_authority_key(path, AUTHORITY)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="too open"):
        load_authority_key(path)


def test_a_node_key_is_not_an_authority_key(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, AUTHORITY)
    with pytest.raises(KeyFileError, match="this is a node key, not a network authority key"):
        load_authority_key(path)


def test_an_authority_key_is_not_a_node_key(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    write_authority_key(path, AUTHORITY)
    with pytest.raises(KeyFileError, match="network authority key, not a node key") as caught:
        load_key_file(path)
    assert "offline" in str(caught.value)


def test_a_file_of_neither_kind_names_the_expected_header(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    path.write_text("ssh-ed25519 AAAA\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=AUTHORITY_KEY_FILE_HEADER):
        load_authority_key(path)


def test_network_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "network.json"
    path.write_bytes(encode_network_file(NETWORK, AUTHORITY))
    assert load_network_file(path) == NETWORK
    assert json.loads(path.read_text())["format"] == NETWORK_FILE_FORMAT


def test_the_default_network_is_the_mesh_default() -> None:
    desc = NetworkDescription("home", AUTHORITY.public_key, created_at=5)
    data = encode_network_file(desc, AUTHORITY)
    assert parse_network_file(data).ipv4_network == ipaddress.IPv4Network("100.64.0.0/10")


def _tampered(**changes: object) -> bytes:
    document = json.loads(encode_network_file(NETWORK, AUTHORITY))
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "work"},
        {"ipv4_network": "10.21.0.0/16"},
        {"created_at": 1_700_000_001},
        {"authority_public_key": base64.b64encode(OTHER.public_key).decode()},
    ],
)
def test_a_changed_field_breaks_the_signature(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="signature does not match"):
        parse_network_file(_tampered(**changes), "network.json")


def test_a_copy_re_signed_by_another_key_is_another_network() -> None:
    forged = NetworkDescription("home", OTHER.public_key, NETWORK.ipv4_network, 1_700_000_000)
    desc = parse_network_file(encode_network_file(forged, OTHER))
    assert desc.authority_public_key != NETWORK.authority_public_key
    assert desc.network_secret != NETWORK.network_secret


def test_only_its_own_authority_signs_a_description() -> None:
    with pytest.raises(ValueError, match="authority it names"):
        encode_network_file(NETWORK, OTHER)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a gossipmesh network file"),
        (b'{"format": "gossipmesh-network-v9"}', "not a gossipmesh network file"),
        (_tampered(extra=1), "unknown keys 'extra'"),
        (_tampered(signature="AAAA"), "'signature' must decode to 64 bytes"),
        (_tampered(signature=7), "'signature' must be base64"),
        (_tampered(name="Home"), "must be lower case"),
        (_tampered(name="no_underscores"), "letters, digits and hyphens"),
        (_tampered(ipv4_network="10.20.0.1/16"), "ipv4_network"),
        (_tampered(ipv4_network="10.20.0.0/31"), "/30 or larger"),
        (_tampered(created_at=-1), "created_at"),
        (_tampered(created_at=True), "created_at"),
        (b" " * 20_000, "too large"),
    ],
)
def test_malformed_network_files_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_network_file(data, "net.json")
    assert str(caught.value).startswith("net.json: ")


def test_missing_keys_are_named() -> None:
    document = json.loads(encode_network_file(NETWORK, AUTHORITY))
    del document["created_at"]
    with pytest.raises(ConfigError, match="missing keys 'created_at'"):
        parse_network_file(json.dumps(document).encode())


def test_load_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"network\.json: network file does not exist"):
        load_network_file(tmp_path / "network.json")
    with pytest.raises(ConfigError, match="is a directory"):
        load_network_file(tmp_path)


def test_network_secret_is_what_membership_takes() -> None:
    secret = NETWORK.network_secret
    assert len(secret) == 32
    assert secret == NetworkDescription("other", AUTHORITY.public_key).network_secret
    assert secret != NetworkDescription("home", OTHER.public_key).network_secret
    assert secret != AUTHORITY.public_key
    keys = NetworkSecret(secret)
    assert keys.session_psk != bytes(32)
    assert keys.dht_key != NetworkSecret.open_network().dht_key


def test_load_network_authority_refuses_another_networks_key(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    write_authority_key(path, OTHER)
    with pytest.raises(ConfigError, match="not the authority of network 'home'"):
        load_network_authority(path, NETWORK)
    right = tmp_path / "right.key"
    write_authority_key(right, AUTHORITY)
    assert load_network_authority(right, NETWORK).public_key == AUTHORITY.public_key
