"""Selectors: the words a policy uses for the sides of a flow, and what each one matches.

    *                 anything
    group:NAME        a node whose certificate lists group NAME, and whatever
                      the policy's [groups] entry NAME lists (both, if both exist)
    host:NAME         the node certified as NAME, and every address of the
                      policy's [hosts] entry NAME (both, if both exist)
    cidr:ADDR/LEN     every address in that prefix (a bare ADDR is one address)

A list of selectors is flattened once, at parse time, into one `Match`: the
union of everything it names. Policies only allow, so a union never has to
remember which selector contributed what.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from gossipmesh.errors import LabelError
from gossipmesh.names import normalize_label
from gossipmesh.policy.peer import Endpoint

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY: Final = "*"
KINDS: Final = ("group", "host", "cidr")
MAX_GROUP_DEPTH: Final = 16
"""[groups] entries may name other entries this many levels deep; deeper is an error."""


class SelectorError(ValueError):
    """A selector that cannot be used; the caller adds where it was written."""


def parse_label(text: str, what: str) -> str:
    """A group or host name: a DNS label, compared in lower case."""
    try:
        return normalize_label(text)
    except LabelError as exc:
        raise SelectorError(f"{what}: {exc}") from None


def parse_network(text: str) -> Network:
    """ADDR/LEN or a bare ADDR; host bits must be clear (a typo must not widen a rule)."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise SelectorError(str(exc)) from None


@dataclass(frozen=True)
class Match:
    """The flattened union of a list of selectors."""

    everything: bool = False
    names: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    def union(self, other: Match) -> Match:
        networks = self.networks + tuple(n for n in other.networks if n not in self.networks)
        return Match(
            self.everything or other.everything,
            self.names | other.names,
            self.groups | other.groups,
            networks,
        )

    @property
    def by_identity(self) -> bool:
        """Whether any part looks at names or groups (not only at addresses)."""
        return bool(self.names or self.groups)

    def matches_identity(self, name: str | None, groups: frozenset[str]) -> bool:
        return (
            self.everything
            or (name is not None and name in self.names)
            or not (self.groups.isdisjoint(groups))
        )

    def matches(self, endpoint: Endpoint) -> bool:
        if self.matches_identity(endpoint.name, endpoint.groups):
            return True
        address = endpoint.address
        return address is not None and any(address in network for network in self.networks)


def split_selector(text: object) -> tuple[str, str]:
    """("*", "") or (kind, value) with kind in KINDS; SelectorError otherwise."""
    if not isinstance(text, str):
        raise SelectorError(f"a selector is a string, not {type(text).__name__}")
    if text == ANY:
        return (ANY, "")
    kind, colon, value = text.partition(":")
    kind = kind.lower()
    if not colon or kind not in KINDS:
        raise SelectorError(
            f"{text!r} is not a selector (use *, group:NAME, host:NAME or cidr:ADDR/LEN)"
        )
    if not value:
        raise SelectorError(f"{text!r}: nothing after {kind}:")
    return (kind, value)


class Resolver:
    """Turns selector strings into `Match`es, expanding the policy's [groups] and [hosts].

    `groups` maps a [groups] name to its members (selector strings, not yet
    parsed); `hosts` maps a [hosts] name to its prefixes. Group entries are
    expanded on first use and remembered; a cycle or nesting deeper than
    MAX_GROUP_DEPTH is a SelectorError naming the chain.
    """

    def __init__(
        self, groups: Mapping[str, tuple[str, ...]], hosts: Mapping[str, tuple[Network, ...]]
    ) -> None:
        self.groups = groups
        self.hosts = hosts
        self._expanded: dict[str, Match] = {}

    def selector(self, text: object) -> Match:
        return self._selector(text, ())

    def selectors(self, texts: Iterable[object]) -> Match:
        match = Match()
        for text in texts:
            match = match.union(self._selector(text, ()))
        return match

    def group(self, name: str) -> Match:
        """Everything group:NAME matches (its certificate group and its [groups] entry)."""
        return self._group(name, ())

    def _selector(self, text: object, chain: tuple[str, ...]) -> Match:
        kind, value = split_selector(text)
        if kind == ANY:
            return Match(everything=True)
        if kind == "cidr":
            return Match(networks=(parse_network(value),))
        name = parse_label(value, f"{kind}:{value}")
        if kind == "host":
            return Match(names=frozenset({name}), networks=self.hosts.get(name, ()))
        return self._group(name, chain)

    def _group(self, name: str, chain: tuple[str, ...]) -> Match:
        if name in chain:
            loop = " -> ".join(f"group:{g}" for g in (*chain[chain.index(name) :], name))
            raise SelectorError(f"[groups] refer to each other in a loop: {loop}")
        known = self._expanded.get(name)
        if known is not None:
            return known
        match = Match(groups=frozenset({name}))
        members = self.groups.get(name)
        if members is not None:
            if len(chain) >= MAX_GROUP_DEPTH:
                raise SelectorError(
                    f"group:{name}: [groups] nest more than {MAX_GROUP_DEPTH} levels deep"
                )
            for member in members:
                match = match.union(self._selector(member, (*chain, name)))
        self._expanded[name] = match
        return match
