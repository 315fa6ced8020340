"""Workload: the full gossipmesh node (sessions, DHT, gossip, routing) on the simulator.

Each simulated host runs the real `gossipmesh.node.NodeCore`, built as the
daemon builds it, with the simulated endpoint as its UDP socket and a list
as its TUN device (`MeshPort`), and the real `Discovery` DHT service. The
core is handed the virtual clock's time on every call, so its timers,
handshakes, pings and records follow virtual time; `MeshNode` is the
simulator's adapter, with one timer per node and no task per node. Its
randomness (routing jitter, handshake ephemerals, cookie secrets) comes
from a per-node seeded stream and its wall clock is a fixed epoch plus
virtual time, so runs are reproducible.

A crash closes the endpoint first, so nothing the node says on its way out
(its leave record, DHT goodbyes) reaches anyone, then stops its timer and
its DHT service. A restart builds a new core with the same key and
no state directory: it joins through the bootstrap hosts again, as a
daemon that lost its peer cache would.

The metrics that need the full node (record knowledge, route optimality,
stretch, probe delivery) are in `mesh_metrics`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossipmesh.discovery.service import Discovery
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.node.core import NodeCore
from gossipmesh.node.options import NodeOptions
from gossipmesh.runtime.core_driver import CoreDriver
from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.metrics import MetricCollector
from gossipmesh.simulations.network import Address, SimEndpoint
from gossipmesh.simulations.oracle_dht import OracleDht, OracleDriver
from gossipmesh.simulations.scenario import ScenarioError
from gossipmesh.simulations.workload import LiveView, NodeContext, params_from_table

__all__ = ["MeshNode", "MeshParams", "MeshPort", "MeshWorkload"]

EPOCH = 1_800_000_000.0
"""Unix time at virtual time 0: records' issue and expiry times are reproducible."""
SECRET = NetworkSecret(b"gossipmesh simulator mesh network secret")
DHT_KINDS = ("kademlia", "oracle")


@dataclass(frozen=True)
class MeshParams:
    """The mesh workload's knobs (`[workload]` with kind = "mesh")."""

    timer_scale: float = 1.0
    probe_interval: float = 10.0
    """Node option: seconds between rounds looking for direct paths."""
    directory_interval: float = 5.0
    rpc_timeout: float = 2.0
    max_neighbours: int = 8
    names: bool = True
    data_probe_interval: float = 5.0
    """Every this many seconds, `data_probe_pairs` echo requests go between random live pairs."""
    data_probe_pairs: int = 5
    data_probe_timeout: float = 2.0
    """A data probe counts as delivered if it reaches the target's TUN within this."""
    route_tolerance: float = 0.05
    """A route is optimal within this relative margin (plus the jitter of each hop)."""
    metric_sources: int = 200
    """Route optimality and stretch are measured from at most this many live sources per sample."""
    underlay_links_only: bool = False
    """Hosts exchange datagrams directly only with their neighbours in the topology graph
    (sites that only peer with adjacent sites); every other pair needs the mesh's relays.
    Each host bootstraps from its topology neighbours."""
    dht: str = "kademlia"
    """"kademlia": a real `Discovery` per node; "oracle": one shared record table
    (`oracle_dht`), for gossip and routing studies that need not pay for kademlia."""
    oracle_latency: float = 0.05
    """With the oracle DHT: seconds a publication or look-up takes."""

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str) -> MeshParams:
        params = params_from_table(cls, table, source)
        if params.dht not in DHT_KINDS:
            raise ScenarioError(
                f"{source}: workload.dht: {params.dht!r} is not one of {', '.join(DHT_KINDS)}"
            )
        # A TOML integer is fine where a float is meant (timer_scale = 10).
        return dataclasses.replace(
            params,
            timer_scale=float(params.timer_scale),
            oracle_latency=float(params.oracle_latency),
        )


class MeshPort(asyncio.DatagramProtocol):
    """The node's world: its simulated UDP socket and a fake TUN that records packets.

    `send_datagram`/`write_tun` are the driver's `NodeTransport`;
    `datagram_received` is the endpoint's protocol side, straight into the core.
    """

    def __init__(
        self, endpoint: SimEndpoint, on_tun: Any, reachable: frozenset[Address] | None = None
    ) -> None:
        self.endpoint = endpoint
        self.reachable = reachable
        """Addresses this host may send to directly (None: all)."""
        self.node: MeshNode | None = None
        self.closed = False
        self._on_tun = on_tun

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.closed and (self.reachable is None or addr in self.reachable):
            self.endpoint.sendto(data, addr)

    def write_tun(self, packet: bytes) -> None:
        self._on_tun(packet)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        node = self.node
        if node is not None and not self.closed:
            node.datagram_received(data, (addr[0], addr[1]))


class MeshNode:
    """A simulated host: a real `NodeCore` driven on the virtual clock; a restart builds a new one.

    The simulator's adapter: datagrams go straight into the core, one
    `call_at` timer per node (the `CoreDriver`'s), and tasks only for DHT
    requests in flight, none per node for its rounds or its packets.
    """

    def __init__(self, workload: MeshWorkload, context: NodeContext) -> None:
        self.workload = workload
        self.context = context
        self.host = context.host
        seed = hashlib.sha256(b"gossipmesh-sim-mesh-key:%d" % context.host + context.node_id)
        self.identity = Identity.from_seed(seed.digest())
        self.core: NodeCore | None = None
        self.driver: CoreDriver | None = None
        self.port: MeshPort | None = None
        self.loop: VirtualTimeLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        self.generation = 0

    def _options(self) -> NodeOptions:
        params = self.workload.params
        address = self.context.address
        return NodeOptions(
            name=f"node{self.host}" if params.names else None,
            listen_port=address[1],
            host_endpoints=(address,),
            bootstrap=self.workload.bootstrap_for(self.context),
            timer_scale=params.timer_scale,
            max_neighbours=params.max_neighbours,
            probe_interval=params.probe_interval,
            directory_interval=params.directory_interval,
            rpc_timeout=params.rpc_timeout,
        )

    def start(self, endpoint: SimEndpoint, loop: VirtualTimeLoop) -> None:
        self.generation += 1
        self.loop = loop
        port = MeshPort(endpoint, self._tun_written, self.workload.reachable_from(self.host))
        # One stream per generation, drawn from the host's stream: deterministic.
        rng = random.Random(self.context.rng.getrandbits(64))
        entropy = random.Random(self.context.rng.getrandbits(64))
        options = self._options()
        core = NodeCore(
            self.identity,
            SECRET,
            options,
            now=loop.time(),
            wall_offset=EPOCH,
            rng=rng,
            random_bytes=entropy.randbytes,
        )
        oracle = self.workload.oracle
        if oracle is not None:
            self._start_with_oracle(core, port, endpoint, loop, oracle, options)
            return
        discovery = Discovery(
            self.identity,
            SECRET,
            port.send_datagram,
            None,
            record_lifetime=options.record_lifetime,
            rpc_timeout=options.rpc_timeout,
            wall_clock=lambda: loop.time() + EPOCH,
            rng=random.Random(self.identity.node_id + bytes([self.generation % 256])),
        )
        driver = CoreDriver(core, loop, port, discovery)
        port.node = self
        endpoint.attach(port)
        self.port, self.core, self.driver = port, core, driver
        driver.drain()
        self._starting = loop.create_task(self._join(core, driver, options))
        self.workload.node_started(self, loop)

    def _start_with_oracle(
        self,
        core: NodeCore,
        port: MeshPort,
        endpoint: SimEndpoint,
        loop: VirtualTimeLoop,
        oracle: OracleDht,
        options: NodeOptions,
    ) -> None:
        """The node with the shared record table as its DHT: timers only, no task."""
        nonces = random.Random(self.context.rng.getrandbits(64))
        driver = OracleDriver(
            core,
            loop,
            port,
            oracle,
            self.identity,
            self.context.address,
            record_lifetime=options.record_lifetime,
            rpc_timeout=options.rpc_timeout,
            next_nonce=lambda: nonces.getrandbits(64),
        )
        port.node = self
        endpoint.attach(port)
        self.port, self.core, self.driver = port, core, driver
        oracle.running.add(self.identity.node_id)
        oracle.membership_changed()
        driver.drain()
        driver.join()
        self.workload.node_started(self, loop)

    async def _join(self, core: NodeCore, driver: CoreDriver, options: NodeOptions) -> None:
        await driver.discovery.start(options.bootstrap)
        driver.report_contacts()
        core.start(driver.loop.time())
        driver.drain()

    def stop(self) -> None:
        """Crash: cut the wire first, so nothing said on the way out leaves; then end its work."""
        driver, port, loop = self.driver, self.port, self.loop
        if driver is None or port is None or loop is None:
            return
        port.closed = True
        port.endpoint.close()
        self.core = None
        self.driver = None
        if isinstance(driver, OracleDriver):
            driver.halt()
            oracle = self.workload.oracle
            if oracle is not None:
                oracle.running.discard(self.identity.node_id)
                oracle.membership_changed()
            return
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        # Simulation housekeeping, not protocol: the driver's timer and requests end.
        loop.create_task(self._halt(driver))

    @staticmethod
    async def _halt(driver: CoreDriver) -> None:
        await driver.close()
        await driver.discovery.stop()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        core, driver = self.core, self.driver
        if core is not None and driver is not None:
            core.receive_datagram(data, addr, driver.loop.time())
            driver.drain()

    def tun_packet(self, packet: bytes) -> None:
        """A packet as if read from this host's TUN (the data probes)."""
        core, driver = self.core, self.driver
        if core is not None and driver is not None:
            core.tun_packet(packet, driver.loop.time())
            driver.drain()

    @property
    def running(self) -> NodeCore | None:
        """The node's core while the host runs."""
        return self.core

    def _tun_written(self, packet: bytes) -> None:
        self.workload.tun_written(self.host, packet)


class MeshWorkload:
    """Creates mesh nodes, injects data probes, and hands out the collectors."""

    def __init__(
        self, params: MeshParams, view: LiveView, underlay: Any, graph: Any, seed: int
    ) -> None:
        from gossipmesh.simulations.mesh_metrics import MeshMetrics, ProbeDelivery

        self.params = params
        self.view = view
        self.nodes: dict[int, MeshNode] = {}
        self.host_by_id: dict[bytes, int] = {}
        self.probes = ProbeDelivery(self, random.Random(f"{seed}:data-probes"))
        self.mesh_metrics = MeshMetrics(self, underlay, random.Random(f"{seed}:route-sample"))
        self.graph = graph
        self.oracle = OracleDht(params.oracle_latency) if params.dht == "oracle" else None

    def reachable_from(self, host: int) -> frozenset[Address] | None:
        """Where `host` may send directly: everywhere, or its topology neighbours."""
        if not self.params.underlay_links_only:
            return None
        network = self.view.network
        return frozenset(network.address_of(n) for n in self.graph.neighbors(host))

    def bootstrap_for(self, context: NodeContext) -> tuple[Address, ...]:
        """The scenario's bootstrap hosts, or the topology neighbours if links are limited."""
        if self.params.underlay_links_only:
            network = self.view.network
            return tuple(network.address_of(n) for n in sorted(self.graph.neighbors(context.host)))
        return tuple(a for a in context.bootstrap if a != context.address)

    def create_node(self, context: NodeContext) -> MeshNode:
        node = MeshNode(self, context)
        self.nodes[context.host] = node
        self.host_by_id[node.identity.node_id] = context.host
        return node

    def node_started(self, node: MeshNode, loop: VirtualTimeLoop) -> None:
        self.probes.ensure_scheduled(loop)

    def tun_written(self, host: int, packet: bytes) -> None:
        self.probes.tun_written(host, packet)

    def running_nodes(self) -> dict[int, NodeCore]:
        """The cores of live hosts, by host."""
        live = {}
        for host in self.view.live_hosts():
            core = self.nodes[host].core
            if core is not None:
                live[host] = core
        return live

    def collectors(self) -> list[MetricCollector]:
        return [self.mesh_metrics, self.probes]
