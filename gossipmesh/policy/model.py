"""The policy file: TOML text in, a frozen, validated `Policy` out.

    version = 4                      # positive integer; a newer version replaces an older one
    [groups]                         # policy-side groups made of other selectors
    admins = ["group:dev", "host:alice"]
    [hosts]                          # names for addresses and prefixes
    lab = "10.20.0.0/24"             # or a list: ["10.20.0.0/24", "fd20::/64"]
    [[rules]]                        # each rule allows; everything else is denied
    from = ["group:dev"]
    to = ["group:web"]
    proto = "tcp"                    # tcp | udp | icmp | any
    ports = ["22", "8000-8100"]      # tcp and udp only; omitted: every port
    [[tests]]                        # checked before signing; see PolicyTest
    from = "host:alice"
    from_groups = ["dev"]
    to = "group:web"
    proto = "tcp"
    port = 22
    expect = "allow"

Typos must not silently open or close anything, so an unknown key, a value
of the wrong type or an empty list is an error, and every error names the
table and the field: `policy.toml: [[rules]] #3: ports: ...`.

The test semantics (a selector naming one concrete, synthetic endpoint) are
in `PolicyTest`; the selector semantics in gossipmesh.policy.selectors.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from gossipmesh.errors import ConfigError
from gossipmesh.policy.peer import Endpoint
from gossipmesh.policy.selectors import (
    ANY,
    Match,
    Network,
    Resolver,
    SelectorError,
    parse_label,
    parse_network,
    split_selector,
)

MAX_POLICY_BYTES: Final = 64 * 1024
MAX_RULES: Final = 10_000
MAX_TESTS: Final = 10_000
MAX_GROUPS: Final = 1_000
MAX_HOSTS: Final = 10_000
MAX_LIST: Final = 1_000
"""Most selectors, ports, group members or host prefixes in one list."""
MAX_VERSION: Final = (1 << 64) - 1
"""The signed document's version field is a u64."""

PortRange = tuple[int, int]
TOP_KEYS: Final = frozenset({"version", "groups", "hosts", "rules", "tests"})
RULE_KEYS: Final = frozenset({"from", "to", "proto", "ports"})
TEST_KEYS: Final = frozenset(
    {
        "from",
        "to",
        "proto",
        "port",
        "expect",
        "from_groups",
        "to_groups",
        "from_address",
        "to_address",
    }
)


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    ANY = "any"

    @property
    def numbers(self) -> frozenset[int] | None:
        """IP protocol numbers it covers; None: all of them."""
        return _PROTOCOL_NUMBERS[self]

    @property
    def has_ports(self) -> bool:
        return self in (Protocol.TCP, Protocol.UDP)


_PROTOCOL_NUMBERS: Final[dict[Protocol, frozenset[int] | None]] = {
    Protocol.TCP: frozenset({6}),
    Protocol.UDP: frozenset({17}),
    Protocol.ICMP: frozenset({1, 58}),
    Protocol.ANY: None,
}


@dataclass(frozen=True)
class Rule:
    """One [[rules]] table: new flows from `sources` to `destinations` are allowed."""

    number: int
    """1-based position among the [[rules]] tables, as messages and `policy check` name it."""
    sources: Match
    destinations: Match
    protocol: Protocol
    ports: tuple[PortRange, ...] | None
    """Merged, sorted, inclusive ranges; None: every port."""

    def allows_port(self, protocol: int, port: int) -> bool:
        numbers = self.protocol.numbers
        if numbers is not None and protocol not in numbers:
            return False
        return self.ports is None or any(low <= port <= high for low, high in self.ports)


@dataclass(frozen=True)
class PolicyTest:
    """One [[tests]] table: a flow between two synthetic endpoints and the expected answer.

    Each side is a selector naming one concrete endpoint:

    - `host:NAME`: the node certified as NAME, with the certificate groups
      listed in `from_groups` / `to_groups` (none if omitted). If [hosts]
      defines NAME, it is instead that address, which must then be a single
      address (a prefix is not one endpoint);
    - `group:NAME`: a node with no name whose certificate groups are NAME
      plus those in `from_groups` / `to_groups`;
    - `cidr:ADDR` (or ADDR/32, ADDR/128): a host at that address with no
      certificate, such as a leaf or a machine behind a node.

    `from_address` / `to_address` give an identified endpoint an address, so
    that cidr: selectors and [hosts] prefixes can match it; without one they
    never do. `*` is not one endpoint and is refused.
    """

    number: int
    source: Endpoint
    destination: Endpoint
    protocol: Protocol
    port: int
    """The destination port for tcp and udp; 0 for icmp."""
    expect_allow: bool
    description: str
    """The test as written, for reports: `host:alice -> group:web tcp/22`."""


@dataclass(frozen=True)
class Policy:
    version: int
    rules: tuple[Rule, ...]
    tests: tuple[PolicyTest, ...]
    groups: Mapping[str, Match]
    hosts: Mapping[str, tuple[Network, ...]]
    source: str
    """The TOML text this was parsed from: what gets signed and shipped."""

    def first_allowing_rule(
        self, source: Endpoint, destination: Endpoint, protocol: int, port: int
    ) -> Rule | None:
        """The reference evaluator: the first rule that allows this new flow, or None (denied).

        Plain and slow on purpose: `policy check` reports from it and the
        compiled form (gossipmesh.policy.evaluate) is tested against it.
        """
        for rule in self.rules:
            if (
                rule.allows_port(protocol, port)
                and rule.sources.matches(source)
                and rule.destinations.matches(destination)
            ):
                return rule
        return None


def _where_error(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _string_list(value: Any, where: str, *, single: bool = True) -> list[str]:
    """A non-empty list of strings (or one string when `single`)."""
    if single and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _where_error(where, "must be a non-empty list of strings")
    if len(value) > MAX_LIST:
        raise _where_error(where, f"more than {MAX_LIST} entries")
    for item in value:
        if not isinstance(item, str):
            raise _where_error(where, f"{item!r} is not a string")
    return value


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _where_error(where, "must be a table")
    return value


def _check_keys(value: Any, allowed: frozenset[str], where: str) -> Mapping[str, Any]:
    table = _table(value, where)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _where_error(
            where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )
    return table


def _parse_port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _where_error(where, f"{value!r} is not a port number")
    if not 0 <= value <= 65535:
        raise _where_error(where, f"{value} is outside 0-65535")
    return value


def _parse_port_range(value: Any, where: str) -> PortRange:
    if isinstance(value, int) and not isinstance(value, bool):
        port = _parse_port(value, where)
        return (port, port)
    if not isinstance(value, str):
        raise _where_error(where, f"{value!r} is not a port or a range like '8000-8100'")
    low_text, dash, high_text = (part.strip() for part in value.partition("-"))
    if not all(t.isascii() and t.isdigit() for t in (low_text, high_text if dash else "0")):
        raise _where_error(where, f"{value!r} is not a port or a range like '8000-8100'")
    low = int(low_text)
    high = int(high_text) if dash else low
    _parse_port(low, where)
    _parse_port(high, where)
    if low > high:
        raise _where_error(where, f"{value!r}: the range starts above its end")
    return (low, high)


def merge_ranges(ranges: list[PortRange]) -> tuple[PortRange, ...]:
    """Sorted, non-overlapping, non-adjacent inclusive ranges covering the same ports."""
    merged: list[PortRange] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def _parse_protocol(value: Any, where: str, allowed: tuple[Protocol, ...]) -> Protocol:
    names = ", ".join(p.value for p in allowed)
    if not isinstance(value, str) or value.lower() not in {p.value for p in allowed}:
        raise _where_error(where, f"{value!r} is not one of {names}")
    return Protocol(value.lower())


def _parse_hosts(value: Any, where: str) -> dict[str, tuple[Network, ...]]:
    table = _table(value, where)
    if len(table) > MAX_HOSTS:
        raise _where_error(where, f"more than {MAX_HOSTS} entries")
    hosts: dict[str, tuple[Network, ...]] = {}
    for raw_name, raw in table.items():
        here = f"{where} {raw_name}"
        try:
            name = parse_label(raw_name, "name")
            networks = tuple(parse_network(text) for text in _string_list(raw, here))
        except SelectorError as exc:
            raise _where_error(here, str(exc)) from None
        if name in hosts:
            raise _where_error(here, f"{name!r} is defined twice")
        hosts[name] = networks
    return hosts


def _parse_group_members(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    table = _table(value, where)
    if len(table) > MAX_GROUPS:
        raise _where_error(where, f"more than {MAX_GROUPS} entries")
    groups: dict[str, tuple[str, ...]] = {}
    for raw_name, raw in table.items():
        here = f"{where} {raw_name}"
        members = _string_list(raw, here, single=False)
        try:
            name = parse_label(raw_name, "name")
            for number, member in enumerate(members, 1):
                kind, text = split_selector(member)
                if kind == ANY:
                    raise SelectorError("'*' cannot be a group member; write '*' in the rule")
                if kind == "cidr":
                    parse_network(text)
                else:
                    parse_label(text, f"member {number} ({member!r})")
        except SelectorError as exc:
            raise _where_error(here, str(exc)) from None
        if name in groups:
            raise _where_error(here, f"{name!r} is defined twice")
        groups[name] = tuple(members)
    return groups


def _selector_list(resolver: Resolver, value: Any, where: str) -> Match:
    try:
        return resolver.selectors(_string_list(value, where))
    except SelectorError as exc:
        raise _where_error(where, str(exc)) from None


def _parse_rule(value: Any, number: int, resolver: Resolver, where: str) -> Rule:
    here = f"{where}: [[rules]] #{number}"
    table = _check_keys(value, RULE_KEYS, here)
    for key in ("from", "to", "proto"):
        if key not in table:
            raise _where_error(here, f"{key!r} is required")
    sources = _selector_list(resolver, table["from"], f"{here}: from")
    destinations = _selector_list(resolver, table["to"], f"{here}: to")
    protocol = _parse_protocol(table["proto"], f"{here}: proto", tuple(Protocol))
    ports = None
    if "ports" in table:
        if not protocol.has_ports:
            raise _where_error(
                f"{here}: ports", f"only tcp and udp rules have ports, not {protocol}"
            )
        raw = table["ports"]
        if not isinstance(raw, list) or not raw:
            raise _where_error(
                f"{here}: ports", "must be a non-empty list (omit it for every port)"
            )
        if len(raw) > MAX_LIST:
            raise _where_error(f"{here}: ports", f"more than {MAX_LIST} entries")
        ports = merge_ranges(
            [_parse_port_range(item, f"{here}: ports[{i}]") for i, item in enumerate(raw, 1)]
        )
    return Rule(number, sources, destinations, protocol, ports)


def _test_address(value: Any, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise _where_error(where, f"{value!r} is not an address")
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise _where_error(where, str(exc)) from None


def _test_endpoint(
    table: Mapping[str, Any], side: str, policy_hosts: Mapping[str, tuple[Network, ...]], here: str
) -> Endpoint:
    where = f"{here}: {side}"
    text = table.get(side)
    if text is None:
        raise _where_error(here, f"{side!r} is required")
    groups_key, address_key = f"{side}_groups", f"{side}_address"
    extra_groups: frozenset[str] = frozenset()
    if groups_key in table:
        try:
            extra_groups = frozenset(
                parse_label(g, "group")
                for g in _string_list(table[groups_key], f"{here}: {groups_key}")
            )
        except SelectorError as exc:
            raise _where_error(f"{here}: {groups_key}", str(exc)) from None
    address = None
    if address_key in table:
        address = _test_address(table[address_key], f"{here}: {address_key}")
    try:
        kind, value = split_selector(text)
        if kind == ANY:
            raise SelectorError("'*' is not one endpoint; a test names one host, group or address")
        if kind == "cidr":
            network = parse_network(value)
            if network.num_addresses != 1:
                raise SelectorError(f"{text!r} is a prefix; a test needs one address")
            if extra_groups or address is not None:
                raise SelectorError(
                    f"a cidr: endpoint has no certificate; drop {groups_key}/{address_key}"
                )
            return Endpoint(network.network_address)
        name = parse_label(value, text)
    except SelectorError as exc:
        raise _where_error(where, str(exc)) from None
    if kind == "group":
        return Endpoint(address, None, frozenset({name}) | extra_groups)
    if name in policy_hosts:
        networks = policy_hosts[name]
        if len(networks) != 1 or networks[0].num_addresses != 1:
            raise _where_error(
                where,
                f"[hosts] {name} is {', '.join(map(str, networks))}, not one address; "
                "write cidr:ADDR for one host in it",
            )
        if extra_groups or address is not None:
            raise _where_error(
                where, f"[hosts] {name} has no certificate; drop {groups_key}/{address_key}"
            )
        return Endpoint(networks[0].network_address)
    return Endpoint(address, name, extra_groups)


def _parse_test(
    value: Any, number: int, hosts: Mapping[str, tuple[Network, ...]], where: str
) -> PolicyTest:
    here = f"{where}: [[tests]] #{number}"
    table = _check_keys(value, TEST_KEYS, here)
    source = _test_endpoint(table, "from", hosts, here)
    destination = _test_endpoint(table, "to", hosts, here)
    if "proto" not in table:
        raise _where_error(here, "'proto' is required")
    protocol = _parse_protocol(
        table["proto"], f"{here}: proto", (Protocol.TCP, Protocol.UDP, Protocol.ICMP)
    )
    if protocol.has_ports:
        if "port" not in table:
            raise _where_error(here, f"'port' is required for {protocol}")
        port = _parse_port(table["port"], f"{here}: port")
    elif "port" in table:
        raise _where_error(f"{here}: port", "icmp has no ports")
    else:
        port = 0
    expect = table.get("expect")
    if expect not in ("allow", "deny"):
        raise _where_error(f"{here}: expect", f"{expect!r} is not allow or deny")
    shown = f"{table['from']} -> {table['to']} {protocol}" + (
        f"/{port}" if protocol.has_ports else ""
    )
    return PolicyTest(number, source, destination, protocol, port, expect == "allow", shown)


def _array_of_tables(value: Any, name: str, limit: int, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _where_error(where, f"write {name} as [[{name}]] tables")
    if len(value) > limit:
        raise _where_error(where, f"more than {limit} [[{name}]] tables")
    return value


def parse_policy(text: str, where: str = "policy") -> Policy:
    """Parse and validate policy TOML; ConfigError naming `where`, the table and the field."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        raise _where_error(
            where, f"{size} bytes is more than the {MAX_POLICY_BYTES} a policy may have"
        )
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _where_error(where, f"invalid TOML: {exc}") from None
    _check_keys(document, TOP_KEYS, where)
    version = document.get("version")
    if version is None:
        raise _where_error(where, "'version' is required (a positive integer)")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise _where_error(where, f"version: {version!r} is not a positive integer below 2**64")
    hosts = _parse_hosts(document.get("hosts", {}), f"{where}: [hosts]")
    members = _parse_group_members(document.get("groups", {}), f"{where}: [groups]")
    resolver = Resolver(members, hosts)
    groups: dict[str, Match] = {}
    for name in members:
        try:
            groups[name] = resolver.group(name)
        except SelectorError as exc:
            raise _where_error(f"{where}: [groups] {name}", str(exc)) from None
    rules = tuple(
        _parse_rule(value, number, resolver, where)
        for number, value in enumerate(
            _array_of_tables(document.get("rules", []), "rules", MAX_RULES, where), 1
        )
    )
    tests = tuple(
        _parse_test(value, number, hosts, where)
        for number, value in enumerate(
            _array_of_tables(document.get("tests", []), "tests", MAX_TESTS, where), 1
        )
    )
    return Policy(version, rules, tests, groups, hosts, text)
