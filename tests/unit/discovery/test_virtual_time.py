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
            # A fresh republication: the cadence is 600 s, each round jittered by +-10 %.
            assert found.issued_at >= int(seeker.now()) - 1.2 * 600 - 60
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


async def _late_bootstrap() -> tuple[int, float, bool]:
    loop = asyncio.get_running_loop()
    secret = NetworkSecret(b"virtual network secret 0123456789")
    up: dict[tuple[str, int], Discovery] = {}
    seed_address, joiner_address = ("10.2.0.1", 51821), ("10.2.0.2", 51821)

    def sender(source: tuple[str, int]) -> Any:
        def send(datagram: bytes, addr: tuple[str, int]) -> None:
            target = up.get(addr)  # nothing answers for a node that is not up yet
            if target is not None:
                loop.call_later(LATENCY, target.datagram_received, datagram, source)

        return send

    seed = Discovery(Identity.generate(), secret, sender(seed_address))
    joiner = Discovery(Identity.generate(), secret, sender(joiner_address))
    up[joiner_address] = joiner
    known_at_start = await joiner.start([seed_address])
    await asyncio.sleep(20)  # the bootstrap node comes up late
    up[seed_address] = seed
    await seed.start()
    started = loop.time()
    while not joiner.known_peers() and loop.time() - started < 600:
        await asyncio.sleep(1)
    joined_after = loop.time() - started
    key = joiner.identity.public_key
    record = NodeRecord(key, 0, 0, 1, endpoints=(Endpoint(EndpointKind.HOST, *joiner_address),))
    published = (await joiner.publish(record)).ok
    await joiner.stop()
    await seed.stop()
    return known_at_start, joined_after, published


def test_a_node_whose_bootstrap_was_down_joins_soon_after_it_comes_up() -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        known_at_start, joined_after, published = runner.run(
            asyncio.wait_for(_late_bootstrap(), timeout=3600)
        )
    assert known_at_start == 0
    # Backing off from 2 s, not waiting for the 600 s republish round.
    assert joined_after < 60
    assert published
