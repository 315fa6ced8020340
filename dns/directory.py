"""The view the resolver answers from: who is in the mesh, by name and by address.

The daemon implements `MeshDirectory` over its gossiped record table (and the
DHT for `lookup_name`); tests and the benchmark use `InMemoryDirectory`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gossipmesh.names import is_key_name, normalize_label

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class MeshHost:
    """One node as the resolver sees it."""

    name: str | None
    """The human name the node holds (after the conflict rule), if any."""
    key_name: str
    """The name derived from its key (`gm-...`), which only it can hold."""
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address

    @property
    def canonical_label(self) -> str:
        """The label PTR answers point to: the human name when held, else the key name."""
        return self.name or self.key_name


class MeshDirectory(Protocol):
    """What the daemon tells the resolver. Labels are passed lower-cased and validated."""

    def host_by_name(self, label: str) -> MeshHost | None:
        """The node holding `label` (a human or a key-derived name) in the local table."""

    def host_by_address(self, address: IPAddress) -> MeshHost | None:
        """The node holding a mesh IPv4 or IPv6 address in the local table."""

    async def lookup_name(self, label: str) -> MeshHost | None:
        """Slow path when the table does not know `label` (the daemon asks the DHT)."""


class InMemoryDirectory:
    """A dictionary-backed directory: the resolver's view in tests and benchmarks."""

    def __init__(
        self,
        hosts: Iterable[MeshHost] = (),
        remote: Iterable[MeshHost] = (),
    ) -> None:
        self._by_name: dict[str, MeshHost] = {}
        self._by_address: dict[IPAddress, MeshHost] = {}
        self._remote: dict[str, MeshHost] = {}
        self.lookups: list[str] = []
        """Every label `lookup_name` was asked for, so tests can see the slow path was taken."""
        for host in hosts:
            self.add(host)
        for host in remote:
            for label in _labels_of(host):
                self._remote[label] = host

    def add(self, host: MeshHost) -> None:
        for label in _labels_of(host):
            self._by_name[label] = host
        if host.ipv4 is not None:
            self._by_address[host.ipv4] = host
        self._by_address[host.ipv6] = host

    def host_by_name(self, label: str) -> MeshHost | None:
        return self._by_name.get(label)

    def host_by_address(self, address: IPAddress) -> MeshHost | None:
        return self._by_address.get(address)

    async def lookup_name(self, label: str) -> MeshHost | None:
        """Answers from the `remote` hosts, standing in for a DHT lookup."""
        self.lookups.append(label)
        return self._remote.get(label)


def _labels_of(host: MeshHost) -> list[str]:
    labels = [normalize_label(host.key_name)]
    if host.name is not None:
        name = normalize_label(host.name)
        if is_key_name(name) and name != labels[0]:
            raise ValueError(f"{host.name!r} has the form of another key's name")
        labels.append(name)
    return labels
