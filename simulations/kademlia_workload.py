"""Phase-1 workload: real kademlia nodes on the simulated network.

Each node runs the `kademlia` package's own `Server` and `KademliaProtocol`
(routing table, crawlers, storage, hourly refresh), handed a simulated
endpoint instead of a socket. A node bootstraps from the scenario's
bootstrap hosts (plus, after a restart, the peers it knew), publishes its
record under its own node id (as the gossipmesh daemon does), republishes it
periodically, and looks up the record of a random live node every
`lookup_interval` seconds. Its record changes (a new version) every time it
starts and, with `new_version_on_republish = true`, at every republish
(plain kademlia has no sequence numbers, so stale copies then surface in
lookups: a measure of what gossipmesh's versioned records must fix). A
lookup succeeds when it returns
the version current when it started, or a newer one.

One change to kademlia's behaviour, on by default (`welcome_once`): see
`WelcomeOnceProtocol` — unmodified kademlia 2.2.3 melts down in a STORE
storm once buckets fill (N of several hundred). `welcome_once = false`
runs it exactly as published, to reproduce that.

Lookup hops: kademlia's crawler does not report them, so lookups use
`CountingValueSpiderCrawl`, a subclass of its `ValueSpiderCrawl` that counts
rounds. One *hop* is one round of the iterative lookup: up to `alpha`
parallel FIND_VALUE requests to the closest not-yet-asked nodes (or to all of
the k closest not yet asked, when a round brought no closer node). The
lookup ends in the round where a value arrives, or when the k closest
known nodes have all been asked. `queries` is the number of distinct nodes
asked. A record found in the node's own storage is 0 hops.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from kademlia.crawling import ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.metrics import MetricCollector, mean, percentile
from gossipmesh.simulations.network import Address, SimEndpoint
from gossipmesh.simulations.scenario import ScenarioError
from gossipmesh.simulations.workload import LiveView, NodeContext, params_from_table

__all__ = [
    "CountingValueSpiderCrawl",
    "DhtInspector",
    "DhtMetrics",
    "KademliaNode",
    "KademliaParams",
    "KademliaWorkload",
    "LookupResult",
    "WelcomeOnceProtocol",
]


class CountingValueSpiderCrawl(ValueSpiderCrawl):  # type: ignore[misc]
    """kademlia's value lookup, unchanged, counting its rounds (hops)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rounds = 0

    async def find(self) -> Any:
        self.rounds += 1
        return await super().find()

    @property
    def queries(self) -> int:
        return len(self.nearest.contacted)


class WelcomeOnceProtocol(KademliaProtocol):  # type: ignore[misc]
    """kademlia's protocol, handing stored values to a given newcomer only once.

    kademlia 2.2.3 calls `welcome_if_new` on every request from and every
    response by a peer, and counts a peer as new while it is not in its
    k-bucket. A peer that cannot enter a full bucket (it waits in the
    replacement cache) stays "new" forever, so each reply to a STORE
    triggers STOREs of every key that peer should hold again: with two
    such keys, traffic to that peer doubles every round trip. The
    simulator found this at N=800 (one pair of nodes sent 15,360 STOREs
    in one virtual second). This subclass runs kademlia's own
    `welcome_if_new` the first time it meets a peer; later it only does
    what kademlia does after the hand-over (`add_contact`).
    """

    welcome_memory = 4096

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.welcomed: dict[bytes, None] = {}

    def welcome_if_new(self, node: Node) -> None:
        if not self.router.is_new_node(node):
            return
        if node.id in self.welcomed:
            self.router.add_contact(node)
            return
        self.welcomed[node.id] = None
        if len(self.welcomed) > self.welcome_memory:
            del self.welcomed[next(iter(self.welcomed))]
        super().welcome_if_new(node)


@dataclass(frozen=True)
class KademliaParams:
    """The kademlia workload's knobs (`[workload]` in a scenario)."""

    ksize: int = 20
    alpha: int = 3
    lookup_interval: float = 30.0
    republish_interval: float = 600.0
    record_size: int = 200
    new_version_on_republish: bool = False
    coverage_target: float = 0.99
    welcome_once: bool = True

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str) -> KademliaParams:
        params = params_from_table(cls, table, source)
        if not 22 <= params.record_size <= 8000:
            raise ScenarioError(f"{source}: workload.record_size: must be in 22..8000 bytes")
        return params


@dataclass(frozen=True)
class LookupResult:
    """One measured lookup: who looked for whose record, and how it went."""

    time: float
    source: int
    target: int
    found: bool
    fresh: bool
    hops: int
    queries: int
    latency: float


def record_value(host: int, version: int, size: int) -> bytes:
    """The record a host publishes: its index and version, padded to `size`."""
    head = b"rec:%d:%d:" % (host, version)
    return head + b"." * max(0, size - len(head))


def record_version(value: object) -> int | None:
    if not isinstance(value, bytes) or not value.startswith(b"rec:"):
        return None
    try:
        return int(value.split(b":", 3)[2])
    except (IndexError, ValueError):
        return None


class KademliaNode:
    """A kademlia `Server` whose socket is a simulated endpoint."""

    def __init__(self, workload: KademliaWorkload, context: NodeContext) -> None:
        self.workload = workload
        self.context = context
        self.host = context.host
        self.rng = context.rng
        self.server: Server | None = None
        self.loop: VirtualTimeLoop | None = None
        self.generation = 0
        self.version = 0
        self.peer_cache: list[Address] = []

    def start(self, endpoint: SimEndpoint, loop: VirtualTimeLoop) -> None:
        """Start a fresh kademlia server on `endpoint` (what `Server.listen` does)."""
        params = self.workload.params
        self.generation += 1
        self.version += 1
        self.workload.current_version[self.host] = self.version
        self.loop = loop
        server = Server(ksize=params.ksize, alpha=params.alpha, node_id=self.context.node_id)
        if params.welcome_once:
            server.protocol_class = WelcomeOnceProtocol
        server.protocol = server._create_protocol()
        server.transport = endpoint
        endpoint.attach(server.protocol)
        server.refresh_table()
        self.server = server
        loop.create_task(self._life(self.generation))

    def stop(self) -> None:
        """Crash: keep a peer cache (as the daemon persists one), drop the rest."""
        if self.server is None:
            return
        self.peer_cache = [
            (str(ip), int(port)) for ip, port in self.server.bootstrappable_neighbors()
        ]
        self.server.stop()
        self.server = None
        self.generation += 1

    def _current(self, generation: int) -> bool:
        return generation == self.generation and self.server is not None

    async def _life(self, generation: int) -> None:
        loop = self.loop
        assert loop is not None and self.server is not None
        params = self.workload.params
        contacts = [a for a in self.context.bootstrap if a != self.context.address]
        contacts += [a for a in self.peer_cache if a not in contacts]
        if contacts:
            await self.server.bootstrap(contacts)
        if not self._current(generation):
            return
        await self._publish(generation)
        next_publish = loop.time() + params.republish_interval
        next_lookup = loop.time() + self.rng.uniform(0, params.lookup_interval)
        while self._current(generation):
            await asyncio.sleep(max(0.0, min(next_publish, next_lookup) - loop.time()))
            if not self._current(generation):
                return
            if loop.time() >= next_publish:
                if params.new_version_on_republish:
                    self.version += 1
                    self.workload.current_version[self.host] = self.version
                await self._publish(generation)
                next_publish += params.republish_interval
            if loop.time() >= next_lookup and self._current(generation):
                await self._lookup(generation)
                next_lookup = loop.time() + params.lookup_interval * self.rng.uniform(0.5, 1.5)

    async def _publish(self, generation: int) -> None:
        server = self.server
        assert server is not None
        value = record_value(self.host, self.version, self.workload.params.record_size)
        try:
            await server.set_digest(self.context.node_id, value)
        except ValueError:
            # kademlia's set_digest raises on an empty crawl result (every
            # peer timed out); the next republish tries again.
            self.workload.failed_publishes += 1

    async def _lookup(self, generation: int) -> None:
        server = self.server
        loop = self.loop
        assert server is not None and loop is not None
        target = self.workload.pick_target(self.host, self.rng)
        if target is None:
            return
        key = self.workload.node_ids[target]
        wanted = self.workload.current_version.get(target, 0)
        started = loop.time()
        hops = queries = 0
        value = server.storage.get(key)
        if value is None:
            node = Node(key)
            nearest = server.protocol.router.find_neighbors(node)
            if nearest:
                spider = CountingValueSpiderCrawl(
                    server.protocol, node, nearest, server.ksize, server.alpha
                )
                value = await spider.find()
                hops, queries = spider.rounds, spider.queries
        if not self._current(generation):
            return
        version = record_version(value)
        self.workload.lookups.append(
            LookupResult(
                time=loop.time(),
                source=self.host,
                target=target,
                found=version is not None,
                fresh=version is not None and version >= wanted,
                hops=hops,
                queries=queries,
                latency=loop.time() - started,
            )
        )


class DhtInspector(Protocol):
    """What `DhtMetrics` reads from a DHT workload (read-only, never sends)."""

    view: LiveView
    ksize: int
    alpha: int
    coverage_target: float
    node_ids: dict[int, bytes]
    lookups: list[LookupResult]
    failed_publishes: int

    def holds_current_record(self, holder: int, owner: int) -> bool:
        """Does `holder` store `owner`'s current record (or a newer one)?"""
        ...

    def routing_table_ids(self, host: int) -> set[bytes] | None:
        """The node ids in `host`'s routing table (None when it is down)."""
        ...


class KademliaWorkload:
    """Creates kademlia nodes and knows what they should be storing."""

    def __init__(self, params: KademliaParams, view: LiveView) -> None:
        self.params = params
        self.view = view
        self.ksize = params.ksize
        self.alpha = params.alpha
        self.coverage_target = params.coverage_target
        self.nodes: dict[int, KademliaNode] = {}
        self.node_ids: dict[int, bytes] = {}
        self.current_version: dict[int, int] = {}
        self.lookups: list[LookupResult] = []
        self.failed_publishes = 0

    def holds_current_record(self, holder: int, owner: int) -> bool:
        server = self.nodes[holder].server
        if server is None:
            return False
        stored = server.storage.data.get(self.node_ids[owner])
        if stored is None:
            return False
        version = record_version(stored[1])
        return version is not None and version >= self.current_version.get(owner, 0)

    def routing_table_ids(self, host: int) -> set[bytes] | None:
        server = self.nodes[host].server
        if server is None:
            return None
        return {node_id for bucket in server.protocol.router.buckets for node_id in bucket.nodes}

    def create_node(self, context: NodeContext) -> KademliaNode:
        node = KademliaNode(self, context)
        self.nodes[context.host] = node
        self.node_ids[context.host] = context.node_id
        return node

    def pick_target(self, source: int, rng: Any) -> int | None:
        candidates = [h for h in self.view.live_hosts() if h != source]
        return rng.choice(candidates) if candidates else None

    def collectors(self) -> list[MetricCollector]:
        return [DhtMetrics(self)]


def _top64(node_id: bytes) -> int:
    return int.from_bytes(node_id[:8], "big")


class DhtMetrics:
    """DHT health: lookups (hops, success), record placement, routing coverage.

    `records_placed`: the fraction of live nodes whose current record is held
    by at least one of the k live nodes closest to its key — the nodes a
    complete lookup ends at. `routing_coverage`: the mean fraction of each
    live node's k closest live nodes that are in its routing table.
    `lookup_success`: lookups finished in the window that returned the
    current (or a newer) version of the record. The DHT is *converged* in a
    sample when every record is placed, every lookup in the window
    succeeded and routing coverage reached `coverage_target`.
    """

    name = "dht"

    def __init__(self, workload: DhtInspector) -> None:
        self.workload = workload
        self._seen_lookups = 0
        self._closest_cache: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None
        self.first_all_placed: float | None = None
        self.last_coverage = math.nan

    def _closest(self, live: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """k closest live nodes to each live node, with and without itself."""
        key = tuple(live)
        if self._closest_cache is not None and self._closest_cache[0] == key:
            return self._closest_cache[1], self._closest_cache[2]
        ids = np.array([_top64(self.workload.node_ids[h]) for h in live], dtype=np.uint64)
        k = min(self.workload.ksize, len(live))
        with_self = np.zeros((len(live), k), dtype=np.int64)
        without_self = np.zeros((len(live), max(0, min(k, len(live) - 1))), dtype=np.int64)
        for start in range(0, len(live), 512):
            block = ids[start : start + 512, None] ^ ids[None, :]
            order = np.argsort(block, axis=1, kind="stable")
            with_self[start : start + 512] = order[:, :k]
            # Distance 0 is the node itself: it sorts first.
            without_self[start : start + 512] = order[:, 1 : 1 + without_self.shape[1]]
        self._closest_cache = (key, with_self, without_self)
        return with_self, without_self

    def _oracle(self, now: float) -> tuple[float, float]:
        workload = self.workload
        live = workload.view.live_hosts()
        if not live:
            return math.nan, math.nan
        with_self, without_self = self._closest(live)
        placed = 0
        coverage: list[float] = []
        for row, host in enumerate(live):
            if any(workload.holds_current_record(live[c], host) for c in with_self[row]):
                placed += 1
            known = workload.routing_table_ids(host)
            if without_self.shape[1] and known is not None:
                hits = sum(workload.node_ids[live[c]] in known for c in without_self[row])
                coverage.append(hits / without_self.shape[1])
        return placed / len(live), mean(coverage)

    def sample(self, now: float) -> dict[str, float]:
        window = self.workload.lookups[self._seen_lookups :]
        self._seen_lookups = len(self.workload.lookups)
        placed, coverage = self._oracle(now)
        self.last_coverage = coverage
        if placed == 1.0 and self.first_all_placed is None:
            self.first_all_placed = now
        success = mean([1.0 if r.fresh else 0.0 for r in window])
        converged = (
            placed == 1.0
            and (not window or success == 1.0)
            and coverage >= self.workload.coverage_target
        )
        return {
            "records_placed": placed,
            "routing_coverage": coverage,
            "lookups": float(len(window)),
            "lookup_success": success,
            "lookup_hops": mean([float(r.hops) for r in window if r.found]),
            "lookup_latency": mean([r.latency for r in window if r.found]),
            "converged": 1.0 if converged else 0.0,
        }

    def summary(self) -> dict[str, Any]:
        lookups = self.workload.lookups
        found = [r for r in lookups if r.found]
        remote = [r for r in found if r.hops > 0]
        return {
            "lookups": len(lookups),
            "lookup_found_rate": mean([1.0 if r.found else 0.0 for r in lookups]),
            "lookup_success_rate": mean([1.0 if r.fresh else 0.0 for r in lookups]),
            "hops_mean": mean([float(r.hops) for r in found]),
            "hops_median": percentile([float(r.hops) for r in found], 0.5),
            "hops_p95": percentile([float(r.hops) for r in found], 0.95),
            "remote_hops_mean": mean([float(r.hops) for r in remote]),
            "queries_mean": mean([float(r.queries) for r in found]),
            "local_hit_rate": mean([1.0 if r.hops == 0 else 0.0 for r in found]),
            "lookup_latency_mean": mean([r.latency for r in found]),
            "time_all_records_placed": self.first_all_placed,
            "final_routing_coverage": self.last_coverage,
            "failed_publishes": self.workload.failed_publishes,
            "ksize": self.workload.ksize,
            "alpha": self.workload.alpha,
        }

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {"lookups": [asdict(r) for r in self.workload.lookups]}
