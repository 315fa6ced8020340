"""The wg_bridge's pure parts: config parsing, cryptokey routing, endpoint forms."""

from __future__ import annotations

import base64
import ipaddress
import socket
from pathlib import Path

import pytest

from gossipmesh.runtime.wg_bridge import AllowedIPs, BridgeConfigError, _socket_address, load_config
from tests.unit.session.pair import make_manager, peer_of


def test_load_config(tmp_path: Path) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    path = tmp_path / "bridge.toml"
    path.write_text(
        f'private_key = "{key}"\nlisten_port = 4000\ninterface = "gmx"\n'
        'addresses = ["10.0.0.2/24", "fd00::2/64"]\ntimer_scale = 30\n'
        f'[[peer]]\npublic_key = "{key}"\nendpoint = "[fd00::9]:51820"\n'
        'allowed_ips = ["10.0.0.1/32", "fd00::/64"]\n'
    )
    config = load_config(path)
    assert config.listen_port == 4000 and config.timer_scale == 30.0
    assert config.preshared_key == bytes(32)
    (peer,) = config.peers
    assert peer.endpoint == ("fd00::9", 51820)
    assert peer.allowed_ips[1] == ipaddress.ip_network("fd00::/64")


def test_bad_key_in_config(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text('private_key = "c2hvcnQ="\n')
    with pytest.raises(BridgeConfigError, match="32 bytes"):
        load_config(path)


def test_allowed_ips_longest_prefix_and_cache() -> None:
    a, b, c = make_manager(1), make_manager(2), make_manager(3)
    a.add_peer(b.static_public, 0.0)
    a.add_peer(c.static_public, 0.0)
    routes = AllowedIPs()
    routes.add(ipaddress.ip_network("10.0.0.0/8"), peer_of(a, b))
    routes.add(ipaddress.ip_network("10.1.0.0/16"), peer_of(a, c))
    routes.add(ipaddress.ip_network("fd00::/64"), peer_of(a, c))
    assert routes.lookup(bytes([10, 1, 2, 3])) is peer_of(a, c)
    assert routes.lookup(bytes([10, 2, 2, 3])) is peer_of(a, b)
    assert routes.lookup(bytes([10, 1, 2, 3])) is peer_of(a, c)  # cached
    assert routes.lookup(bytes([192, 0, 2, 1])) is None
    assert routes.lookup(ipaddress.ip_address("fd00::5").packed) is peer_of(a, c)
    assert routes.lookup(b"\x0a\x01") is None  # from a truncated packet


def test_socket_address_matches_recvfrom_form() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
        assert _socket_address(v4, ("10.0.0.1", 5)) == ("10.0.0.1", 5)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
        assert _socket_address(v6, ("10.0.0.1", 5)) == ("::ffff:10.0.0.1", 5, 0, 0)
        assert _socket_address(v6, ("fd00::1", 5)) == ("fd00::1", 5, 0, 0)
