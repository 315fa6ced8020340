"""Real nodes in one process over loopback UDP, with a fake TUN at the OS edge.

Each node gets its own UDP socket on 127.0.0.1 (an ephemeral port) and the
real sessions, DHT and routing. The fake TUN only records the packets the
node delivers. `allowed` restricts which nodes may exchange datagrams
directly (enforced in the transport, so a topology holds by construction,
not by luck): a datagram between a pair that is not allowed is dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gossipmesh.icmp import internet_checksum
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.node import Node, NodeOptions

SECRET = NetworkSecret(b"loopback mesh test secret 0123456789")


class LoopbackTransport(asyncio.DatagramProtocol):
    """The node's transport: a loopback UDP socket and a list standing in for the TUN."""

    def __init__(self, mesh: LoopbackMesh, index: int) -> None:
        self.mesh = mesh
        self.index = index
        self.node: Node | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.delivered: list[bytes] = []
        self.sent_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.udp = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.node is not None and self.mesh.permits(addr[1], self.index):
            self.node.datagram_received(data, addr)

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.udp is None or not self.mesh.permits(self.port, addr[1], to_port=True):
            return
        self.sent_bytes += len(data)
        self.udp.sendto(data, addr)

    def write_tun(self, packet: bytes) -> None:
        self.delivered.append(packet)

    @property
    def port(self) -> int:
        assert self.udp is not None
        return int(self.udp.get_extra_info("sockname")[1])


@dataclass
class LoopbackMesh:
    """N nodes; `allowed` is a set of index pairs that may talk directly (None: all)."""

    size: int
    state_root: Path
    allowed: set[frozenset[int]] | None = None
    timer_scale: float = 10.0
    seed: int = 1
    names: bool = True
    nodes: list[Node] = field(default_factory=list)
    transports: list[LoopbackTransport] = field(default_factory=list)
    identities: list[Identity] = field(default_factory=list)
    _index_of_port: dict[int, int] = field(default_factory=dict)

    def permits(self, from_port: int, to: int, *, to_port: bool = False) -> bool:
        """May the node on `from_port` reach node `to` (an index, or a port if to_port)?"""
        if self.allowed is None:
            return True
        source = self._index_of_port.get(from_port)
        target = self._index_of_port.get(to) if to_port else to
        if source is None or target is None:
            return False
        return source == target or frozenset((source, target)) in self.allowed

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(self.seed)
        for index in range(self.size):
            transport = LoopbackTransport(self, index)
            await loop.create_datagram_endpoint(lambda t=transport: t, local_addr=("127.0.0.1", 0))
            self.transports.append(transport)
            self._index_of_port[transport.port] = index
            self.identities.append(Identity.from_seed(rng.randbytes(32)))

    def build(self, index: int, bootstrap: Iterable[int] = ()) -> Node:
        transport = self.transports[index]
        node = Node(
            self.identities[index],
            SECRET,
            NodeOptions(
                name=f"node{index}" if self.names else None,
                listen_port=transport.port,
                host_endpoints=(("127.0.0.1", transport.port),),
                bootstrap=tuple(("127.0.0.1", self.transports[b].port) for b in bootstrap),
                timer_scale=self.timer_scale,
                probe_interval=5.0,
                directory_interval=5.0,
                rpc_timeout=0.5,
            ),
            transport,
            state_dir=self.state_root / f"node{index}",
            rng=random.Random(self.seed * 1000 + index),
        )
        transport.node = node
        if index < len(self.nodes):
            self.nodes[index] = node
        else:
            self.nodes.append(node)
        return node

    async def start_all(self, bootstrap_of: Callable[[int], Iterable[int]]) -> None:
        for index in range(self.size):
            self.build(index, bootstrap_of(index))
        await asyncio.gather(*(node.start() for node in self.nodes))

    async def close(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)
        for transport in self.transports:
            if transport.udp is not None:
                transport.udp.close()


def echo_request(
    source: ipaddress.IPv4Address, destination: ipaddress.IPv4Address, ident: int, size: int = 56
) -> bytes:
    """An ICMP echo request as the TUN would hand it over."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident & 0xFFFF, 1) + bytes(size)
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        ident & 0xFFFF,
        0x4000,
        64,
        1,
        0,
        source.packed,
        destination.packed,
    )
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + icmp


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; return the seconds it took, or fail naming `what`."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started
