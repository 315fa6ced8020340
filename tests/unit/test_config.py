"""Config: TOML file, flag overrides, and errors that name the key and file."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gossipmesh.config import DEFAULT_LISTEN_PORT, build_settings, parse_host_port
from gossipmesh.errors import ConfigError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gossipmesh.toml"
    path.write_text(text)
    return path


def test_defaults_are_safe() -> None:
    settings = build_settings(None, {})
    assert settings.listen == DEFAULT_LISTEN_PORT
    assert settings.ipv4_network == ipaddress.IPv4Network("100.64.0.0/10")
    assert settings.bootstrap == ()


def test_file_values_and_flag_overrides(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        'listen = 4000\nname = "Server"\nbootstrap = ["peer.example:51821", "[::1]:7"]\n'
        'ipv4-network = "10.77.0.0/16"\n',
    )
    settings = build_settings(path, {"listen": 5000, "name": None})
    assert settings.listen == 5000
    assert settings.name == "server"
    assert settings.bootstrap == (("peer.example", 51821), ("::1", 7))
    assert settings.ipv4_network == ipaddress.IPv4Network("10.77.0.0/16")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("colour = 1\n", "unknown setting 'colour'"),
        ("listen = 70000\n", "bad value for 'listen'"),
        ('name = "bad_name"\n', "bad value for 'name'"),
        ('bootstrap = ["nocolon"]\n', "bad value for 'bootstrap'"),
        ('log-level = "loud"\n', "bad value for 'log-level'"),
        ("listen = [\n", "invalid TOML"),
    ],
)
def test_errors_name_the_key_and_file(tmp_path: Path, text: str, words: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        build_settings(path, {})
    assert words in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_or_directory_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_settings(tmp_path / "absent.toml", {})
    with pytest.raises(ConfigError, match="directory"):
        build_settings(tmp_path, {})


def test_bad_flag_is_named() -> None:
    with pytest.raises(ConfigError, match="command line: bad value for 'listen'"):
        build_settings(None, {"listen": -1})


@pytest.mark.parametrize("text", ["host", ":1", "host:0", "a:b:c", "[::1]", "[::1]x"])
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_stream_links_default_on_and_switchable(tmp_path: Path) -> None:
    assert build_settings(None, {}).stream_links is True
    config = tmp_path / "gossipmesh.toml"
    config.write_text("stream-links = false\n")
    assert build_settings(config, {}).stream_links is False
    assert build_settings(config, {"stream_links": True}).stream_links is True  # the flag wins
    config.write_text('stream_links = "maybe"\n')
    with pytest.raises(ConfigError, match=r"stream_links.*true or false"):
        build_settings(config, {})
