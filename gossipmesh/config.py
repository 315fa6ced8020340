"""Daemon settings: a TOML file for everything flags set; flags override it.

Every key is declared once in `FIELDS` with its parser, so the file, the
flags and the error messages agree. An unknown key or a bad value is a
`ConfigError` naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, parse_ipv4_network
from gossipmesh.errors import ConfigError, LabelError
from gossipmesh.leaves import LeafPeer, parse_leaf
from gossipmesh.names import normalize_label

DEFAULT_LISTEN_PORT = 51821
"""One UDP port for sessions and DHT. 51820 is left to a kernel WireGuard on the same host."""
DEFAULT_INTERFACE = "gossipmesh0"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("human", "json")
DNS_MODES = ("auto", "resolved", "resolv-conf", "off")


def _parse_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a port number")
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is outside 0-65535")
    return port


def parse_host_port(value: str) -> tuple[str, int]:
    """Parse HOST:PORT or [IPv6]:PORT, as given to --bootstrap."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be HOST:PORT")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{value!r} is not [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not HOST:PORT")
        if ":" in host:
            raise ValueError(f"{value!r}: write IPv6 addresses as [ADDRESS]:PORT")
    port = _parse_port(port_text)
    if port == 0:
        raise ValueError(f"{value!r}: port 0 is not a reachable port")
    return host, port


def _parse_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _parse_path(value: Any) -> Path:
    if isinstance(value, Path):
        return value.expanduser()
    return Path(_parse_str(value)).expanduser()


def _parse_bootstrap(value: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of HOST:PORT strings")
    return tuple(parse_host_port(item) for item in value)


def _parse_name(value: Any) -> str:
    try:
        return normalize_label(_parse_str(value))
    except LabelError as exc:
        raise ValueError(str(exc)) from None


def _parse_interface(value: Any) -> str:
    name = _parse_str(value)
    if len(name) > 15 or "/" in name or any(c.isspace() for c in name):
        raise ValueError(f"{name!r} is not a valid interface name (at most 15 characters)")
    return name


def _parse_routes(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`10.1.0.0/24,fd12::/64` (a flag) or a list (TOML); host bits set is an error."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError("must be CIDR prefixes, e.g. 10.1.0.0/24,fd12::/64")
    routes = []
    for item in items:
        try:
            prefix = ipaddress.ip_network(str(item).strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
        if prefix.prefixlen == 0:
            raise ValueError(f"{item!r}: a default route is an exit node, not a subnet")
        routes.append(prefix)
    return tuple(routes)


def _parse_exit_node(value: Any) -> str | None:
    name = _parse_str(value)
    return None if name.lower() == "off" else _parse_name(name)


def _parse_network(value: Any) -> ipaddress.IPv4Network:
    return parse_ipv4_network(_parse_str(value))


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _parse_str(value).lower()
        if text not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return text

    return parse


def _parse_positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number")
    number = float(value)
    if not number > 0:
        raise ValueError("must be greater than 0")
    return number


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _parse_str(value).lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError("must be true or false")


def _parse_leaves(value: Any) -> tuple[LeafPeer, ...]:
    if not isinstance(value, list):
        raise ValueError("write leaf peers as [[leaf]] tables")
    leaves = tuple(parse_leaf(item) for item in value)
    names = [leaf.name for leaf in leaves]
    if len(set(names)) != len(names):
        raise ValueError("leaf names must be unique")
    return leaves


@dataclass(frozen=True)
class Settings:
    """Everything the daemon can be told; defaults are the safe choice."""

    key: Path | None = None
    bootstrap: tuple[tuple[str, int], ...] = ()
    listen: int = DEFAULT_LISTEN_PORT
    network_secret: Path | None = None
    network: Path | None = None
    """network.json of a network with an authority (`gossipmesh network init`)."""
    cert: Path | None = None
    """This node's certificate from that authority (`gossipmesh cert sign`)."""
    name: str | None = None
    interface: str = DEFAULT_INTERFACE
    state_dir: Path | None = None
    ipv4_network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK
    dns: str = "auto"
    dns_suffix: str = "mesh"
    log_level: str = "info"
    log_format: str = "human"
    timer_scale: float = 1.0
    """Divides protocol timers (rekey, keepalive); only tests lower them."""
    leaf: tuple[LeafPeer, ...] = ()
    """Stock WireGuard devices attached to this node (`[[leaf]]` tables)."""
    advertise_routes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Subnets behind this node that it routes for (approved by its certificate)."""
    snat: bool = False
    advertise_exit_node: bool = False
    """Offer this host as a way out of the mesh (its certificate must allow it)."""
    exit_node: str | None = None
    """Send everything outside the mesh through this node (by name); None or "off": not."""
    """Masquerade mesh traffic into those subnets (their hosts then need no route back)."""
    stream_links: bool = True
    """Carry bulk traffic to other gossipmesh nodes over TCP stream links (gossipmesh.links)."""


FIELDS: dict[str, Callable[[Any], Any]] = {
    "key": _parse_path,
    "bootstrap": _parse_bootstrap,
    "listen": _parse_port,
    "network_secret": _parse_path,
    "network": _parse_path,
    "cert": _parse_path,
    "name": _parse_name,
    "interface": _parse_interface,
    "state_dir": _parse_path,
    "ipv4_network": _parse_network,
    "dns": _choice(DNS_MODES),
    "dns_suffix": _parse_name,
    "log_level": _choice(LOG_LEVELS),
    "log_format": _choice(LOG_FORMATS),
    "timer_scale": _parse_positive_float,
    "leaf": _parse_leaves,
    "stream_links": _parse_bool,
    "advertise_routes": _parse_routes,
    "snat": _parse_bool,
    "advertise_exit_node": _parse_bool,
    "exit_node": _parse_exit_node,
}


def _apply(base: Settings, values: Mapping[str, Any], where: str) -> Settings:
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        field_name = key.replace("-", "_")
        parser = FIELDS.get(field_name)
        if parser is None:
            known = ", ".join(sorted(k.replace("_", "-") for k in FIELDS))
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {known})")
        try:
            changes[field_name] = parser(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: bad value for {key!r}: {exc}") from None
    return dataclasses.replace(base, **changes)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file; every failure names the file."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def build_settings(config_file: Path | None, flags: Mapping[str, Any]) -> Settings:
    """Settings from the config file (if any), then the flags that were given.

    Flags whose value is None (not given) do not override the file.
    """
    settings = Settings()
    if config_file is not None:
        settings = _apply(settings, load_config_file(config_file), str(config_file))
    given = {key: value for key, value in flags.items() if value is not None and value != ()}
    return _apply(settings, given, "command line")
