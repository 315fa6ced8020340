"""What `up --network --cert` refuses before the node exists, and what network.json decides."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from gossipmesh.config import Settings
from gossipmesh.errors import UsageError
from gossipmesh.identity import Identity
from gossipmesh.runtime.trust_setup import load_trust
from gossipmesh.trust.authority import NetworkDescription, encode_network_file
from gossipmesh.trust.certificate import encode_certificate_file, sign_certificate

AUTHORITY = Identity.from_seed(b"A" * 32)
NODE = Identity.from_seed(b"n" * 32)
NETWORK = ipaddress.IPv4Network("100.80.0.0/16")


def _files(tmp_path: Path, name: str = "alpha", lifetime: int = 3600) -> tuple[Path, Path]:
    network = tmp_path / "network.json"
    description = NetworkDescription("home", AUTHORITY.public_key, NETWORK, 1)
    network.write_bytes(encode_network_file(description, AUTHORITY))
    now = int(time.time())
    cert = sign_certificate(
        AUTHORITY, NODE.public_key, name, ["dev"], None, (), False, now - 60, now + lifetime
    )
    cert_path = tmp_path / "node.cert"
    cert_path.write_bytes(encode_certificate_file(cert))
    return network, cert_path


def test_the_network_file_decides_the_ipv4_range_and_the_certificate_the_name(
    tmp_path: Path,
) -> None:
    network, cert = _files(tmp_path)
    trust = load_trust(Settings(network=network, cert=cert), NODE)
    assert trust.ipv4_network == NETWORK
    assert trust.name == "alpha"
    assert trust.authority_public_key == AUTHORITY.public_key


def test_a_conflicting_ipv4_network_flag_is_refused(tmp_path: Path) -> None:
    network, cert = _files(tmp_path)
    other = ipaddress.IPv4Network("10.99.0.0/16")
    with pytest.raises(UsageError, match=r"differs from 100\.80\.0\.0/16"):
        load_trust(Settings(network=network, cert=cert, ipv4_network=other), NODE)
    same = load_trust(Settings(network=network, cert=cert, ipv4_network=NETWORK), NODE)
    assert same.ipv4_network == NETWORK


def test_an_expired_certificate_or_another_name_is_refused(tmp_path: Path) -> None:
    network, cert = _files(tmp_path, lifetime=30)
    with pytest.raises(UsageError, match="expired"):
        load_trust(Settings(network=network, cert=cert), NODE, now=time.time() + 120)
    with pytest.raises(UsageError, match="grants alpha"):
        load_trust(Settings(network=network, cert=cert, name="beta"), NODE)
    with pytest.raises(UsageError, match="needs --cert"):
        load_trust(Settings(network=network), NODE)


def test_no_network_keeps_the_settings_range(tmp_path: Path) -> None:
    trust = load_trust(Settings(ipv4_network=NETWORK), NODE)
    assert trust.authority_public_key is None and trust.ipv4_network == NETWORK
