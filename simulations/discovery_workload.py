"""Workload: gossipmesh's own DHT (`gossipmesh.discovery.Discovery`) on the simulator.

Each node is a `Discovery` exactly as the daemon builds it: Ed25519
identity, sealed datagrams, signed and verified records, its own peer
handling and republish cadence. The simulator gives it `endpoint.sendto`
as its `send` callable and feeds it what arrives. Record times come from
a fixed epoch plus virtual time, so runs are reproducible.

A node publishes its node record at start (Discovery republishes it on its
own cadence, with a new sequence number each time) and looks up the node
record of a random live node every `lookup_interval` seconds. A lookup
succeeds when it returns the target's current sequence (or newer).

Hops are counted without touching Discovery's code: the node's kademlia
protocol object has its `call_find_value` wrapped, and a lookup's hops are
the number of distinct virtual instants at which it sent FIND_VALUE
requests. A round sends all its requests at one instant and the next round
starts only when replies arrive (latency > 0), so that is the round count,
as `kademlia_workload` counts it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossipmesh.discovery import Discovery
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.records import Endpoint, EndpointKind, NodeRecord
from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.kademlia_workload import DhtMetrics, LookupResult
from gossipmesh.simulations.metrics import MetricCollector
from gossipmesh.simulations.network import Address, SimEndpoint
from gossipmesh.simulations.workload import LiveView, NodeContext, params_from_table

__all__ = ["DiscoveryNode", "DiscoveryParams", "DiscoveryWorkload"]

EPOCH = 1_800_000_000.0
"""Unix time at virtual time 0: record issue and expiry times are reproducible."""
SECRET = NetworkSecret(b"gossipmesh simulator network secret")


@dataclass(frozen=True)
class DiscoveryParams:
    """The discovery workload's knobs (`[workload]` with kind = "discovery")."""

    ksize: int = 20
    alpha: int = 3
    lookup_interval: float = 30.0
    republish_interval: float = 600.0
    record_lifetime: int = 1800
    rpc_timeout: float = 5.0
    coverage_target: float = 0.99

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str) -> DiscoveryParams:
        return params_from_table(cls, table, source)


class _Port(asyncio.DatagramProtocol):
    """The node's UDP port: every datagram goes to its Discovery (all are DHT here)."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.discovery.datagram_received(data, (addr[0], addr[1]))


class DiscoveryNode:
    """A simulated node running gossipmesh's Discovery."""

    def __init__(self, workload: DiscoveryWorkload, context: NodeContext) -> None:
        self.workload = workload
        self.context = context
        self.host = context.host
        self.rng = context.rng
        seed = hashlib.sha256(b"gossipmesh-sim-key:%d" % context.host + context.node_id).digest()
        self.identity = Identity.from_seed(seed)
        self.discovery: Discovery | None = None
        self.endpoint: SimEndpoint | None = None
        self.loop: VirtualTimeLoop | None = None
        self.generation = 0
        self.peer_cache: list[Address] = []
        self._lookup_instants: set[float] | None = None
        self._lookup_queries = 0

    def start(self, endpoint: SimEndpoint, loop: VirtualTimeLoop) -> None:
        params = self.workload.params
        self.generation += 1
        self.loop = loop
        discovery = Discovery(
            self.identity,
            SECRET,
            endpoint.sendto,
            None,
            ksize=params.ksize,
            alpha=params.alpha,
            record_lifetime=params.record_lifetime,
            republish_interval=params.republish_interval,
            rpc_timeout=params.rpc_timeout,
            wall_clock=lambda: EPOCH + loop.time(),
        )
        self.discovery = discovery
        self.endpoint = endpoint
        endpoint.attach(_Port(discovery))
        loop.create_task(self._life(self.generation, discovery))

    def stop(self) -> None:
        """Crash: the endpoint closes first, so Discovery's own stop() sends nothing."""
        discovery, endpoint, loop = self.discovery, self.endpoint, self.loop
        if discovery is None or endpoint is None or loop is None:
            return
        self.peer_cache = [(peer.host, peer.port) for peer in discovery.known_peers()]
        endpoint.close()
        self.discovery = None
        self.generation += 1
        # Simulation housekeeping, not protocol: end the crashed node's tasks.
        loop.create_task(discovery.stop())

    def _count_find_value(self, discovery: Discovery) -> None:
        protocol = discovery._server.protocol  # type: ignore[union-attr]
        original = protocol.call_find_value
        loop = self.loop
        assert loop is not None

        def counted(node_to_ask: Any, node_to_find: Any) -> Any:
            if self._lookup_instants is not None:
                self._lookup_instants.add(loop.time())
                self._lookup_queries += 1
            return original(node_to_ask, node_to_find)

        protocol.call_find_value = counted

    def _current(self, generation: int) -> bool:
        return generation == self.generation and self.discovery is not None

    async def _life(self, generation: int, discovery: Discovery) -> None:
        loop = self.loop
        assert loop is not None
        contacts = [a for a in self.context.bootstrap if a != self.context.address]
        contacts += [a for a in self.peer_cache if a not in contacts]
        await discovery.start(contacts)
        if not self._current(generation):
            return
        self._count_find_value(discovery)
        host, port = self.context.address
        template = NodeRecord(
            public_key=self.identity.public_key,
            sequence=0,
            issued_at=0,
            expires_at=1,
            endpoints=(Endpoint(EndpointKind.HOST, host, port),),
        )
        result = await discovery.publish(template)
        if not result.ok:
            self.workload.failed_publishes += 1
        params = self.workload.params
        while self._current(generation):
            await asyncio.sleep(params.lookup_interval * self.rng.uniform(0.5, 1.5))
            if self._current(generation):
                await self._lookup(generation, discovery)

    async def _lookup(self, generation: int, discovery: Discovery) -> None:
        loop = self.loop
        assert loop is not None
        target = self.workload.pick_target(self.host, self.rng)
        if target is None:
            return
        wanted = self.workload.current_sequence(target)
        started = loop.time()
        self._lookup_instants, self._lookup_queries = set(), 0
        record = await discovery.lookup_node(self.workload.node_ids[target])
        hops, queries = len(self._lookup_instants), self._lookup_queries
        self._lookup_instants = None
        if not self._current(generation):
            return
        self.workload.lookups.append(
            LookupResult(
                time=loop.time(),
                source=self.host,
                target=target,
                found=record is not None,
                fresh=record is not None and record.sequence >= wanted,
                hops=hops,
                queries=queries,
                latency=loop.time() - started,
            )
        )


class DiscoveryWorkload:
    """Creates Discovery nodes; answers `DhtMetrics`' questions about them."""

    def __init__(self, params: DiscoveryParams, view: LiveView) -> None:
        self.params = params
        self.view = view
        self.ksize = params.ksize
        self.alpha = params.alpha
        self.coverage_target = params.coverage_target
        self.nodes: dict[int, DiscoveryNode] = {}
        self.node_ids: dict[int, bytes] = {}
        self.lookups: list[LookupResult] = []
        self.failed_publishes = 0

    def create_node(self, context: NodeContext) -> DiscoveryNode:
        node = DiscoveryNode(self, context)
        self.nodes[context.host] = node
        self.node_ids[context.host] = node.identity.node_id
        return node

    def pick_target(self, source: int, rng: Any) -> int | None:
        candidates = [h for h in self.view.live_hosts() if h != source]
        return rng.choice(candidates) if candidates else None

    def current_sequence(self, host: int) -> int:
        """The sequence of `host`'s latest published node record (0 before any)."""
        discovery = self.nodes[host].discovery
        record = discovery.current_node_record() if discovery is not None else None
        return record.sequence if record is not None else 0

    def holds_current_record(self, holder: int, owner: int) -> bool:
        discovery = self.nodes[holder].discovery
        if discovery is None or discovery._server is None:
            return False
        record = discovery._server.storage.record(self.node_ids[owner])
        wanted = self.current_sequence(owner)
        return record is not None and wanted > 0 and record.sequence >= wanted

    def routing_table_ids(self, host: int) -> set[bytes] | None:
        discovery = self.nodes[host].discovery
        if discovery is None or discovery._server is None:
            return None
        buckets = discovery._server.protocol.router.buckets
        return {node_id for bucket in buckets for node_id in bucket.nodes}

    def collectors(self) -> list[MetricCollector]:
        return [DhtMetrics(self)]
