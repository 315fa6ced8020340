"""The DHT, unchanged, on a virtual-time loop and an in-memory network: hours in seconds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gossipmesh.discovery import Discovery
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.records import Endpoint, EndpointKind, NameRecord, NodeRecord
from tests.unit.discovery.virtual_loop import VirtualTimeLoop

NODES = 16
LATENCY = 0.02


async def _hours_pass() -> float:
    loop = asyncio.get_running_loop()
    secret = NetworkSecret(b"virtual network secret 0123456789")
    nodes: dict[tuple[str, int], Discovery] = {}
    names: dict[tuple[str, int], str] = {}

    def sender(source: tuple[str, int]) -> Any:
        def send(datagram: bytes, addr: tuple[str, int]) -> None:
            target = nodes.get(addr)
            if target is not None:
                loop.call_later(LATENCY, target.datagram_received, datagram, source)

        return send

    for i in range(NODES):  # default lifetime (1800 s), republish (600 s), rpc timeout (5 s)
        address = (f"10.1.0.{i + 1}", 51821)
        nodes[address] = Discovery(Identity.generate(), secret, sender(address))
        names[address] = f"v{i}"
    addresses = list(nodes)
    await nodes[addresses[0]].start()
    await asyncio.gather(*(nodes[a].start([addresses[0]]) for a in addresses[1:]))
    for address, discovery in nodes.items():
        key = discovery.identity.public_key
        endpoint = Endpoint(EndpointKind.HOST, *address)
        node = NodeRecord(
            key, 0, 0, 1, name=names[address], name_claimed_since=1, endpoints=(endpoint,)
        )
        assert (await discovery.publish(node, NameRecord(names[address], key, 1, 0, 0, 1))).ok

    stopped = addresses[:3]
    for address in stopped:
        await nodes[address].stop()
        del nodes[address]
    started = loop.time()
    await asyncio.sleep(2 * 3600)  # virtual: every record republished many times over
    assert loop.time() - started >= 2 * 3600

    alive = list(nodes.values())
    for seeker in alive:
        for address, target in nodes.items():
            found = await seeker.lookup_name(names[address])
            assert found is not None and found.public_key == target.identity.public_key
            assert found.issued_at >= int(seeker.now()) - 600 - 60  # a fresh republication
        for address in stopped:
            assert await seeker.lookup_name(names[address]) is None
    for discovery in alive:
        assert discovery.stats.rpc_errors == 0
        await discovery.stop()
    return loop.time()


def test_two_virtual_hours_in_real_seconds() -> None:
    began = time.monotonic()
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        virtual_seconds = runner.run(asyncio.wait_for(_hours_pass(), timeout=4 * 3600))
    assert virtual_seconds > 2 * 3600
    assert time.monotonic() - began < 30
