"""The daemon's peer table as a `MeshDirectory`, without the resolver depending on it.

`gossipmesh.directory.Directory` (lookup_name / lookup_address returning a
resolved peer) fits `PeerTable` structurally; the DHT lookup by name is
passed in as a coroutine function, so the daemon wires the two together.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Protocol

from gossipmesh.dns.directory import IPAddress, MeshHost


class ResolvedPeer(Protocol):
    @property
    def name(self) -> str | None: ...

    @property
    def key_name(self) -> str: ...

    @property
    def ipv4(self) -> ipaddress.IPv4Address | None: ...

    @property
    def ipv6(self) -> ipaddress.IPv6Address: ...


class PeerTable(Protocol):
    def lookup_name(self, label: str) -> ResolvedPeer | None: ...

    def lookup_address(self, address: IPAddress) -> ResolvedPeer | None: ...


NameLookup = Callable[[str], Awaitable[ResolvedPeer | None]]


def mesh_host(peer: ResolvedPeer) -> MeshHost:
    return MeshHost(name=peer.name, key_name=peer.key_name, ipv4=peer.ipv4, ipv6=peer.ipv6)


class PeerTableView:
    """Answers from the gossiped table; falls back to `dht_lookup` for unknown names."""

    def __init__(self, table: PeerTable, dht_lookup: NameLookup | None = None) -> None:
        self.table = table
        self.dht_lookup = dht_lookup

    def host_by_name(self, label: str) -> MeshHost | None:
        peer = self.table.lookup_name(label)
        return None if peer is None else mesh_host(peer)

    def host_by_address(self, address: IPAddress) -> MeshHost | None:
        peer = self.table.lookup_address(address)
        # Only a node's own addresses get a PTR, not the prefixes it routes for.
        if peer is None or address not in (peer.ipv4, peer.ipv6):
            return None
        return mesh_host(peer)

    async def lookup_name(self, label: str) -> MeshHost | None:
        if self.dht_lookup is None:
            return None
        peer = await self.dht_lookup(label)
        return None if peer is None else mesh_host(peer)
