"""A simulated datagram network for real asyncio protocols.

Each simulated host has one address `(ip, port)` and, while it is up, one
`SimEndpoint`: an `asyncio.DatagramTransport` that real protocol objects
(kademlia's `KademliaProtocol`, the gossipmesh runtime) are given through
`connection_made`. A datagram sent through it arrives at the destination's
protocol `datagram_received` after the underlay latency plus jitter, unless
it is lost, the hosts are partitioned, or the destination is down.

Everything random draws from one seeded `random.Random`, and deliveries are
timers on the virtual-time loop, so runs are reproducible. The model is
bandwidth-free unless a host is given an uplink rate.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gossipmesh.simulations.clock import VirtualTimeLoop

__all__ = [
    "Address",
    "HostCounters",
    "NatBehaviour",
    "OpenInternet",
    "SimEndpoint",
    "SimNetwork",
    "UnderlayLatency",
    "host_address",
]

Address = tuple[str, int]
SIM_PORT = 51821


def host_address(index: int, port: int = SIM_PORT) -> Address:
    """The virtual address of host `index`: 10.x.y.z, one host per index."""
    if not 0 <= index < 2**24:
        raise ValueError(f"host index {index} outside 0..2**24-1")
    return (f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", port)


class UnderlayLatency(Protocol):
    """One-way underlay latency in seconds between two hosts (by index)."""

    def latency(self, source: int, destination: int) -> float: ...


class NatBehaviour(Protocol):
    """How a host's NAT rewrites and filters its traffic (hook for NAT traversal).

    `outbound` returns the source address the destination sees; `inbound`
    says whether a datagram from `remote` may reach the host behind it.
    """

    def outbound(self, host: Address, remote: Address, now: float) -> Address: ...

    def inbound(self, host: Address, remote: Address, now: float) -> bool: ...


class OpenInternet:
    """No NAT: the host's own address is seen, everything may come in."""

    def outbound(self, host: Address, remote: Address, now: float) -> Address:
        return host

    def inbound(self, host: Address, remote: Address, now: float) -> bool:
        return True


@dataclass
class HostCounters:
    """Datagrams and bytes a host sent and received, and what was dropped."""

    sent_messages: int = 0
    sent_bytes: int = 0
    received_messages: int = 0
    received_bytes: int = 0
    dropped_messages: int = 0


class SimEndpoint(asyncio.DatagramTransport):
    """A host's UDP socket in the simulation, as a datagram transport."""

    def __init__(self, network: SimNetwork, host: int, address: Address) -> None:
        super().__init__(extra={"sockname": address, "peername": None, "socket": None})
        self._network = network
        self.host = host
        self.address = address
        self.protocol: asyncio.BaseProtocol | None = None
        self._closing = False

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Hand this endpoint to `protocol` (calls its `connection_made`)."""
        self.protocol = protocol
        protocol.connection_made(self)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def sendto(self, data: Any, addr: Any = None) -> None:
        if addr is None:
            raise ValueError("a simulated endpoint is unconnected: give sendto an address")
        if self._closing:
            return
        self._network.send(self, bytes(data), (str(addr[0]), int(addr[1])))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Unbind; the protocol's `connection_lost(None)` runs soon after."""
        if self._closing:
            return
        self._closing = True
        self._network.unbind(self)
        protocol = self.protocol
        if protocol is not None:
            self._network.loop.call_soon(protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0


class SimNetwork:
    """Hosts, their endpoints and the links between them, on a virtual clock."""

    def __init__(
        self,
        loop: VirtualTimeLoop,
        underlay: UnderlayLatency,
        rng: random.Random,
        *,
        jitter: float = 0.0,
        loss: float = 0.0,
    ) -> None:
        self.loop = loop
        self.underlay = underlay
        self.rng = rng
        self.jitter = jitter
        self.loss = loss
        self._hosts_by_address: dict[Address, int] = {}
        self._addresses: dict[int, Address] = {}
        self._endpoints: dict[Address, SimEndpoint] = {}
        self._group: dict[int, int] = {}
        self._nat: dict[int, NatBehaviour] = {}
        self._uplink_bps: dict[int, float] = {}
        self._uplink_busy_until: dict[int, float] = {}
        self.counters: dict[int, HostCounters] = {}
        self.total = HostCounters()
        self.taps: list[Callable[[int, int, bytes, float], None]] = []
        loop.datagram_endpoint_factory = self.bind_address

    # -- hosts -----------------------------------------------------------

    def add_host(self, index: int, address: Address | None = None) -> Address:
        """Register host `index` (its underlay position) under `address`."""
        address = address or host_address(index)
        if address in self._hosts_by_address:
            raise ValueError(f"address {address} is already taken")
        self._hosts_by_address[address] = index
        self._addresses[index] = address
        self.counters.setdefault(index, HostCounters())
        return address

    def address_of(self, index: int) -> Address:
        return self._addresses[index]

    def bind(self, index: int) -> SimEndpoint:
        """Open host `index`'s endpoint (its one UDP socket)."""
        address = self._addresses[index]
        if address in self._endpoints:
            raise RuntimeError(f"host {index} at {address} already has an open endpoint")
        endpoint = SimEndpoint(self, index, address)
        self._endpoints[address] = endpoint
        return endpoint

    def bind_address(self, address: Address) -> SimEndpoint:
        """`bind` by address: what the loop's `create_datagram_endpoint` uses."""
        key = (str(address[0]), int(address[1]))
        if key not in self._hosts_by_address:
            raise OSError(f"no simulated host has address {key}")
        return self.bind(self._hosts_by_address[key])

    def unbind(self, endpoint: SimEndpoint) -> None:
        if self._endpoints.get(endpoint.address) is endpoint:
            del self._endpoints[endpoint.address]

    def is_up(self, index: int) -> bool:
        return self._addresses.get(index) in self._endpoints

    def set_nat(self, index: int, behaviour: NatBehaviour) -> None:
        """Put host `index` behind `behaviour` (default: `OpenInternet`)."""
        self._nat[index] = behaviour

    def set_uplink(self, index: int, bits_per_second: float | None) -> None:
        """Give host `index` a finite uplink (serialisation delay, FIFO queue)."""
        if bits_per_second is None:
            self._uplink_bps.pop(index, None)
        else:
            self._uplink_bps[index] = bits_per_second

    # -- partitions --------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split hosts into groups that cannot reach each other.

        Hosts not named in any group form one more group together.
        Datagrams in flight across the cut are lost when they arrive.
        """
        self._group = {}
        for number, group in enumerate(groups, start=1):
            for index in group:
                self._group[index] = number

    def heal(self) -> None:
        """Remove every partition."""
        self._group = {}

    def reachable(self, source: int, destination: int) -> bool:
        return self._group.get(source, 0) == self._group.get(destination, 0)

    # -- datagrams ----------------------------------------------------------

    def send(self, endpoint: SimEndpoint, data: bytes, destination: Address) -> None:
        """Put a datagram on the wire from `endpoint` to `destination`."""
        source = endpoint.host
        size = len(data)
        counters = self.counters[source]
        counters.sent_messages += 1
        counters.sent_bytes += size
        self.total.sent_messages += 1
        self.total.sent_bytes += size
        now = self.loop.time()
        for tap in self.taps:
            tap(source, self._hosts_by_address.get(destination, -1), data, now)
        target = self._hosts_by_address.get(destination)
        if target is None or not self.reachable(source, target):
            counters.dropped_messages += 1
            return
        if self.loss and self.rng.random() < self.loss:
            counters.dropped_messages += 1
            return
        delay = self.underlay.latency(source, target)
        if self.jitter:
            delay += self.rng.random() * self.jitter
        departure = now
        rate = self._uplink_bps.get(source)
        if rate:
            departure = max(now, self._uplink_busy_until.get(source, now)) + size * 8 / rate
            self._uplink_busy_until[source] = departure
        nat = self._nat.get(source)
        seen_as = nat.outbound(endpoint.address, destination, now) if nat else endpoint.address
        self.loop.call_at(departure + delay, self._arrive, source, target, seen_as, data)

    def _arrive(self, source: int, target: int, seen_as: Address, data: bytes) -> None:
        address = self._addresses[target]
        endpoint = self._endpoints.get(address)
        if endpoint is None or not self.reachable(source, target):
            self.counters[target].dropped_messages += 1
            return
        nat = self._nat.get(target)
        if nat is not None and not nat.inbound(address, seen_as, self.loop.time()):
            self.counters[target].dropped_messages += 1
            return
        counters = self.counters[target]
        counters.received_messages += 1
        counters.received_bytes += len(data)
        protocol = endpoint.protocol
        if protocol is not None:
            protocol.datagram_received(data, seen_as)  # type: ignore[attr-defined]
