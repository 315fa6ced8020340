"""The simulated network: latency, loss, partitions, crashes, counters."""

from __future__ import annotations

import asyncio
import random

import networkx as nx
import pytest

from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.network import OpenInternet, SimNetwork, host_address
from gossipmesh.simulations.topology import ShortestPathUnderlay, build_topology


class Recorder(asyncio.DatagramProtocol):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.loop = loop
        self.received: list[tuple[bytes, tuple[str, int], float]] = []
        self.lost = False

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr, self.loop.time()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def line_graph() -> nx.Graph:
    graph = nx.Graph()
    graph.add_edge(0, 1, latency=0.010)
    graph.add_edge(1, 2, latency=0.020)
    graph.add_edge(0, 2, latency=0.100)
    return graph


@pytest.fixture
def net() -> SimNetwork:
    loop = VirtualTimeLoop()
    network = SimNetwork(loop, ShortestPathUnderlay(line_graph()), random.Random(1))
    for host in range(3):
        network.add_host(host)
    yield network
    loop.close()


def attach(network: SimNetwork, host: int) -> tuple[Recorder, object]:
    recorder = Recorder(network.loop)
    endpoint = network.bind(host)
    endpoint.attach(recorder)
    return recorder, endpoint


def test_latency_is_the_shortest_path(net: SimNetwork) -> None:
    r2, _ = attach(net, 2)
    _, e0 = attach(net, 0)
    e0.sendto(b"hello", host_address(2))  # type: ignore[attr-defined]
    net.loop.run_until(1.0)
    assert r2.received == [(b"hello", host_address(0), pytest.approx(0.030))]
    assert net.counters[0].sent_bytes == 5 and net.counters[2].received_messages == 1


def test_partition_drops_and_heal_restores(net: SimNetwork) -> None:
    r2, _ = attach(net, 2)
    _, e0 = attach(net, 0)
    net.partition([[0]])
    e0.sendto(b"cut", host_address(2))  # type: ignore[attr-defined]
    net.loop.run_until(1.0)
    net.heal()
    e0.sendto(b"healed", host_address(2))  # type: ignore[attr-defined]
    net.loop.run_until(2.0)
    assert [d for d, _, _ in r2.received] == [b"healed"]
    assert net.counters[0].dropped_messages == 1


def test_in_flight_datagram_is_lost_when_the_cut_happens(net: SimNetwork) -> None:
    r2, _ = attach(net, 2)
    _, e0 = attach(net, 0)
    e0.sendto(b"flying", host_address(2))  # type: ignore[attr-defined]
    net.loop.call_later(0.015, net.partition, [[2]])
    net.loop.run_until(1.0)
    assert r2.received == []


def test_crashed_host_receives_nothing_and_its_protocol_hears_of_it(net: SimNetwork) -> None:
    r2, e2 = attach(net, 2)
    _, e0 = attach(net, 0)
    e2.close()  # type: ignore[attr-defined]
    e0.sendto(b"anyone?", host_address(2))  # type: ignore[attr-defined]
    net.loop.run_until(1.0)
    assert r2.received == [] and r2.lost
    assert not net.is_up(2)
    r2b, _ = attach(net, 2)  # restart on the same address
    e0.sendto(b"back", host_address(2))  # type: ignore[attr-defined]
    net.loop.run_until(2.0)
    assert [d for d, _, _ in r2b.received] == [b"back"]


def test_loss_is_seeded_and_roughly_the_rate() -> None:
    def delivered(seed: int) -> int:
        loop = VirtualTimeLoop()
        network = SimNetwork(
            loop, ShortestPathUnderlay(line_graph()), random.Random(seed), loss=0.3
        )
        for host in range(3):
            network.add_host(host)
        recorder, _ = attach(network, 1)
        _, sender = attach(network, 0)
        for i in range(1000):
            sender.sendto(b"%d" % i, host_address(1))  # type: ignore[attr-defined]
        loop.run_until(1.0)
        loop.close()
        return len(recorder.received)

    assert delivered(5) == delivered(5)
    assert 620 < delivered(5) < 780


def test_real_asyncio_endpoint_creation_binds_a_simulated_host(net: SimNetwork) -> None:
    async def open_endpoint() -> tuple[object, object]:
        return await net.loop.create_datagram_endpoint(
            lambda: Recorder(net.loop), local_addr=host_address(1)
        )

    transport, _ = net.loop.run_until_complete(open_endpoint())
    assert transport.get_extra_info("sockname") == host_address(1)  # type: ignore[attr-defined]
    assert net.is_up(1)


class DropAllInbound(OpenInternet):
    def inbound(self, host: tuple[str, int], remote: tuple[str, int], now: float) -> bool:
        return False


def test_nat_hook_filters_inbound(net: SimNetwork) -> None:
    r2, _ = attach(net, 2)
    _, e0 = attach(net, 0)
    net.set_nat(2, DropAllInbound())
    e0.sendto(b"blocked", host_address(2))  # type: ignore[attr-defined]
    net.loop.run_until(1.0)
    assert r2.received == []


@pytest.mark.parametrize("kind", ["random_geometric", "waxman", "barabasi_albert"])
def test_generated_topologies_are_connected_and_seeded(kind: str) -> None:
    first = build_topology(kind, 60, {}, seed=3)
    second = build_topology(kind, 60, {}, seed=3)
    assert nx.is_connected(first)
    assert sorted(first.edges(data="latency")) == sorted(second.edges(data="latency"))
    underlay = ShortestPathUnderlay(first)
    assert 0 < underlay.latency(0, 59) < 1.0


def test_latency_matrix_from_csv(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "m.csv").write_text("0,10,50\n10,0,10\n50,10,0\n")
    graph = build_topology("latency_csv", 3, {"path": "m.csv"}, seed=1, base_dir=folder)
    assert ShortestPathUnderlay(graph).latency(0, 2) == pytest.approx(0.020)
