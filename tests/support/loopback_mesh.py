"""Real nodes in one process over loopback UDP, with a fake TUN at the OS edge.

Each node gets its own UDP socket on 127.0.0.1 (an ephemeral port) and the
real sessions, DHT and routing. The fake TUN only records the packets the
node delivers. `allowed` restricts which nodes may exchange datagrams
directly (enforced in the transport, so a topology holds by construction,
not by luck): a datagram between a pair that is not allowed is dropped.
"""

from __future__ import annotations

import asyncio
import functools
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
from gossipmesh.node.options import NodeOptions
from gossipmesh.runtime.node_runner import NodeRunner as Node

SECRET = NetworkSecret(b"loopback mesh test secret 0123456789")


class LoopbackTransport(asyncio.DatagramProtocol):
    """The node's transport: a loopback UDP socket and a list standing in for the TUN."""

    def __init__(self, mesh: LoopbackMesh, index: int) -> None:
        self.mesh = mesh
        self.index = index
        self.node: Node | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.delivered: list[bytes] = []
        self.delivered_set: set[bytes] = set()
        """The same packets as `delivered`, for constant-time checks over many pairs."""
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
        self.delivered_set.add(packet)

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
    probe_interval: float = 5.0
    directory_interval: float = 5.0
    rpc_timeout: float = 0.5
    """Node options in real seconds (divided by timer_scale where the node scales them)."""
    nodes: list[Node] = field(default_factory=list)
    transports: list[LoopbackTransport] = field(default_factory=list)
    identities: list[Identity] = field(default_factory=list)
    isolated: set[int] = field(default_factory=set)
    """Nodes cut off from everyone (crashed): no datagram reaches or leaves them."""
    _index_of_port: dict[int, int] = field(default_factory=dict)

    def permits(self, from_port: int, to: int, *, to_port: bool = False) -> bool:
        """May the node on `from_port` reach node `to` (an index, or a port if to_port)?"""
        source = self._index_of_port.get(from_port)
        target = self._index_of_port.get(to) if to_port else to
        if self.isolated and (source in self.isolated or target in self.isolated):
            return False
        if self.allowed is None:
            return True
        if source is None or target is None:
            return False
        return source == target or frozenset((source, target)) in self.allowed

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(self.seed)
        for index in range(self.size):
            transport = LoopbackTransport(self, index)
            await loop.create_datagram_endpoint(
                functools.partial(_itself, transport), local_addr=("127.0.0.1", 0)
            )
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
                probe_interval=self.probe_interval,
                directory_interval=self.directory_interval,
                rpc_timeout=self.rpc_timeout,
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

    async def crash(self, index: int) -> None:
        """Node `index` vanishes without a word: cut off first, so its goodbye never leaves."""
        self.isolated.add(index)
        await self.nodes[index].stop()

    async def leave(self, index: int) -> None:
        """Node `index` leaves gracefully (its goodbye goes out), then vanishes."""
        await self.nodes[index].stop()
        self.isolated.add(index)

    async def close(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)
        for transport in self.transports:
            if transport.udp is not None:
                transport.udp.close()


def _itself(transport: LoopbackTransport) -> LoopbackTransport:
    return transport


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


def probe_packet(mesh: LoopbackMesh, source: int, target: int, ident: int) -> bytes:
    """The echo request that `source` sends to `target`'s IPv4 address in `reach_all`."""
    a, b = mesh.nodes[source], mesh.nodes[target]
    assert a.ipv4 is not None and b.ipv4 is not None
    return echo_request(a.ipv4, b.ipv4, ident)


async def reach_all(
    mesh: LoopbackMesh,
    pairs: Iterable[tuple[int, int]],
    timeout: float,
    *,
    ident_base: int = 0,
    round_interval: float = 0.25,
) -> float:
    """Until every (source, target) pair has delivered a packet: the seconds it took.

    Each round injects one echo request per pair still pending at the
    source's TUN (the same bytes every round, distinct per pair: ident =
    ident_base + position), then marks the pairs whose packet reached the
    target's TUN. Fails naming the pairs left when `timeout` passes. Packets
    from an earlier call with another `ident_base` never count.
    """
    pending = {pair: probe_packet(mesh, *pair, ident_base + n) for n, pair in enumerate(pairs)}
    started = time.monotonic()
    deadline = started + timeout
    rounds = max(1, int(timeout / round_interval) + 1)
    for _ in range(rounds):
        for (source, _target), packet in pending.items():
            mesh.nodes[source].tun_packet(packet)
        await asyncio.sleep(round_interval)
        pending = {
            pair: packet
            for pair, packet in pending.items()
            if packet not in mesh.transports[pair[1]].delivered_set
        }
        if not pending:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            break
    left = sorted(pending)
    raise AssertionError(
        f"after {timeout:g}s {len(left)} pairs still unreachable, e.g. {left[:10]}"
    )


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; return the seconds it took, or fail naming `what`."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started
