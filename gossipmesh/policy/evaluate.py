"""The decision for a new flow arriving at this node, compiled once per policy version.

`Policy.first_allowing_rule` is the reference: a loop over every rule.
`CompiledPolicy` gives the same answers (tests check it against the
reference) for one destination node, fast enough for every new flow:

- at compile time, rules whose `to` can match neither this node (by name,
  group or `*`) nor any address here are dropped;
- per distinct source principal (certified name and groups, or none), a
  view is built on first use and cached: the (protocol, port ranges)
  allowed to this node's own addresses, those allowed to any destination,
  and the few rules left that still depend on an address (cidr: selectors,
  [hosts] entries). A decision is then two dict look-ups and a bisect,
  plus a loop over those address rules only.

Established flows never get here: the filter's connection table passes them.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gossipmesh.policy.model import Policy, PortRange, Rule, merge_ranges
from gossipmesh.policy.peer import PeerIdentity
from gossipmesh.policy.selectors import Match, Network

MAX_CACHED_PRINCIPALS: Final = 4096
"""Views kept at once; beyond it the cache starts over (principals are few: one per node)."""
ALL_PORTS: Final = ((0, 65535),)

Principal = tuple[str, frozenset[str]] | None
CompiledNetwork = tuple[int, int, int]
"""(packed size 4 or 16, first address, last address) as integers."""


def compile_networks(networks: Iterable[Network]) -> tuple[CompiledNetwork, ...]:
    return tuple(
        (network.max_prefixlen // 8, int(network.network_address), int(network.broadcast_address))
        for network in networks
    )


def in_networks(address: bytes, networks: tuple[CompiledNetwork, ...]) -> bool:
    size = len(address)
    value = int.from_bytes(address, "big")
    return any(size == s and low <= value <= high for s, low, high in networks)


class PortSet:
    """Inclusive port ranges, merged; membership by bisect."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[PortRange]) -> None:
        merged = merge_ranges(list(ranges))
        self._starts = [low for low, _ in merged]
        self._ends = [high for _, high in merged]

    def __contains__(self, port: int) -> bool:
        index = bisect.bisect_right(self._starts, port) - 1
        return index >= 0 and port <= self._ends[index]


@dataclass
class _PortTable:
    """What a set of rules allows, by IP protocol number."""

    any_protocol: bool = False
    ranges: dict[int, list[PortRange]] = field(default_factory=dict)
    sets: dict[int, PortSet] = field(default_factory=dict)

    def add(self, rule: Rule) -> None:
        numbers = rule.protocol.numbers
        if numbers is None:
            self.any_protocol = True
            return
        for number in numbers:
            self.ranges.setdefault(number, []).extend(rule.ports or ALL_PORTS)

    def freeze(self) -> None:
        self.sets = {number: PortSet(ranges) for number, ranges in self.ranges.items()}
        self.ranges = {}

    def allows(self, protocol: int, port: int) -> bool:
        if self.any_protocol:
            return True
        ports = self.sets.get(protocol)
        return ports is not None and port in ports


class _AddressRule:
    """A rule that still depends on the packet's addresses for this principal."""

    __slots__ = ("destinations", "ports", "rule", "sources", "to_everything", "to_local")

    def __init__(
        self,
        rule: Rule,
        sources: tuple[CompiledNetwork, ...] | None,
        to_local: bool,
        to_everything: bool,
        destinations: tuple[CompiledNetwork, ...],
    ) -> None:
        self.rule = rule
        self.sources = sources
        """None: the source already matched (by identity or `*`)."""
        self.to_local = to_local
        self.to_everything = to_everything
        self.destinations = destinations
        self.ports = _PortTable()
        self.ports.add(rule)
        self.ports.freeze()

    def allows(
        self, source: bytes, destination: bytes, local: bool, protocol: int, port: int
    ) -> bool:
        if not self.ports.allows(protocol, port):
            return False
        if not (
            self.to_everything
            or (local and self.to_local)
            or in_networks(destination, self.destinations)
        ):
            return False
        return self.sources is None or in_networks(source, self.sources)


@dataclass
class _View:
    """Everything one source principal may open here."""

    to_local: _PortTable = field(default_factory=_PortTable)
    to_anywhere: _PortTable = field(default_factory=_PortTable)
    by_address: list[_AddressRule] = field(default_factory=list)
    address_ports: _PortTable = field(default_factory=_PortTable)
    """The union of by_address's protocols and ports: most denials stop here."""


@dataclass(frozen=True)
class _LocalRule:
    rule: Rule
    to_local: bool
    """`to` matches this node by name, group or `*`."""
    destinations: tuple[CompiledNetwork, ...]


def _overlaps(network: Network, served: Sequence[Network]) -> bool:
    return any(network.version == other.version and network.overlaps(other) for other in served)


class CompiledPolicy:
    """One policy version compiled for one node: `allows` decides a new inbound flow.

    `local` is this node (its own addresses decide when identity selectors
    on the `to` side apply). `served`, when given, lists every other prefix
    this node delivers to (leaves, routed subnets): address parts of `to`
    that overlap neither it nor `local.addresses` are dropped. None keeps
    them all, which is always correct, only slower.
    """

    def __init__(
        self, policy: Policy, local: PeerIdentity, served: Sequence[Network] | None = None
    ) -> None:
        self.policy = policy
        self.local = local
        self._local_addresses = local.addresses
        if served is not None:
            served = [*served, *(_host_network(address) for address in local.addresses)]
        rules = []
        for rule in policy.rules:
            to = rule.destinations
            to_local = to.matches_identity(local.name, local.groups)
            networks = to.networks
            if served is not None:
                networks = tuple(n for n in networks if _overlaps(n, served))
            if to_local or networks:
                rules.append(_LocalRule(rule, to_local, compile_networks(networks)))
        self.rules: tuple[_LocalRule, ...] = tuple(rules)
        self._views: dict[Principal, _View] = {}

    @property
    def version(self) -> int:
        return self.policy.version

    def allows(
        self, source: PeerIdentity | None, src: bytes, dst: bytes, protocol: int, port: int
    ) -> bool:
        """Whether a new flow from `src` (sent by `source`) to `dst` here is allowed.

        `port` is the destination port for TCP and UDP, 0 otherwise.
        """
        principal = source.principal if source is not None and src in source.addresses else None
        view = self._views.get(principal)
        if view is None:
            view = self._view(principal)
        local = dst in self._local_addresses
        if (view.to_local if local else view.to_anywhere).allows(protocol, port):
            return True
        if not view.address_ports.allows(protocol, port):
            return False
        return any(entry.allows(src, dst, local, protocol, port) for entry in view.by_address)

    def _view(self, principal: Principal) -> _View:
        if len(self._views) >= MAX_CACHED_PRINCIPALS:
            self._views.clear()
        view = _View()
        name, groups = principal if principal is not None else (None, frozenset[str]())
        for entry in self.rules:
            rule = entry.rule
            sources: Match = rule.sources
            by_identity = sources.matches_identity(name, groups)
            if not by_identity and not sources.networks:
                continue
            everything = rule.destinations.everything
            if by_identity and entry.to_local:
                view.to_local.add(rule)
                if everything:
                    view.to_anywhere.add(rule)
            if by_identity and everything:
                continue
            if entry.destinations or not by_identity:
                view.by_address.append(
                    _AddressRule(
                        rule,
                        None if by_identity else compile_networks(sources.networks),
                        entry.to_local,
                        everything,
                        entry.destinations,
                    )
                )
                view.address_ports.add(rule)
        view.to_local.freeze()
        view.address_ports.freeze()
        view.to_anywhere.freeze()
        self._views[principal] = view
        return view


def _host_network(address: bytes) -> Network:
    return ipaddress.ip_network(ipaddress.ip_address(address))
