"""Test-side adapter: one UDP socket on 127.0.0.1 per Discovery, as the runtime gives it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gossipmesh.discovery import Discovery
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.records import Endpoint, EndpointKind, NameRecord, NodeRecord
from gossipmesh.wire import MessageType

T = TypeVar("T")

SECRET = NetworkSecret(b"loopback test network secret 0123")


class _Port(asyncio.DatagramProtocol):
    """Dispatches type-5 datagrams to the Discovery, as the runtime does."""

    def __init__(self) -> None:
        self.discovery: Discovery | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.discovery is not None and data[:1] == bytes([MessageType.DHT]):
            self.discovery.datagram_received(data, (addr[0], addr[1]))


@dataclass
class LoopbackNode:
    identity: Identity
    discovery: Discovery
    transport: asyncio.DatagramTransport
    name: str
    closed: bool = field(default=False)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def templates(self) -> tuple[NodeRecord, NameRecord]:
        """What the daemon would pass to publish(): claims only; Discovery signs."""
        host, port = self.address
        node = NodeRecord(
            public_key=self.identity.public_key,
            sequence=0,
            issued_at=0,
            expires_at=1,
            name=self.name,
            name_claimed_since=1,
            ipv4_held_since=1,
            endpoints=(Endpoint(EndpointKind.HOST, host, port),),
        )
        name = NameRecord(self.name, self.identity.public_key, 1, 0, 0, 1)
        return node, name

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.discovery.stop()
            self.transport.close()


async def open_node(
    name: str,
    secret: NetworkSecret = SECRET,
    identity: Identity | None = None,
    state_dir: Path | None = None,
    **options: Any,
) -> LoopbackNode:
    loop = asyncio.get_running_loop()
    transport, port = await loop.create_datagram_endpoint(_Port, local_addr=("127.0.0.1", 0))
    identity = identity or Identity.generate()
    discovery = Discovery(identity, secret, transport.sendto, state_dir, **options)
    port.discovery = discovery
    return LoopbackNode(identity, discovery, transport, name)


@contextlib.asynccontextmanager
async def closing(nodes: Iterable[LoopbackNode]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for node in list(nodes):
            await node.close()


async def wait_for(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll an async or sync condition until true or `timeout` (bounded, never a bare sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)


def run(coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run a test body on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))
