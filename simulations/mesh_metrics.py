"""Metrics that need the full node: record knowledge, route optimality, stretch, delivery.

Collectors only read node state (`node.directory`, `node.routing.neighbours()`,
`node.routing.route()`) and the underlay; measuring sends nothing, except the
data probes `ProbeDelivery` injects on purpose (on its own seeded stream).

Definitions (docs/simulations.md, "The mesh workload"):

- records known: fraction of ordered pairs of running nodes (a, b) where a's
  directory holds a record of b.
- formed links: pairs of running nodes that each list the other as a routing
  neighbour. Link weight = the true underlay RTT (2 x one-way latency, ms)
  + 100 ms per hop: the routing metric with its measured RTTs replaced by
  the truth.
- forwarding path from s to d: what the data plane does, hop by hop: go
  direct when d is the current hop's neighbour, else to its routing table's
  next hop; a path fails on a missing route, a hop that is not running, a
  loop, or more than max_hops + 1 hops.
- route optimal: the forwarding path exists and its true cost is within
  `route_tolerance` (relative) plus 2 x jitter per hop of the shortest path
  over the formed links (networkx Dijkstra). A pair with no path over the
  formed links counts as not optimal: the goal is one connected mesh.
  Pairs no overlay could connect (with `underlay_links_only`, hosts in
  different components of the topology among running hosts, which crashes
  can split) are left out and counted in `pairs_cut_off`; so are pairs whose
  shortest path over the formed links is longer than the node's `max_hops`
  (8): routing leaves those unreachable by design (`pairs_beyond_max_hops`).
- stretch: forwarding path latency (sum of one-way underlay latencies of its
  hops) / underlay latency between s and d (the true shortest path in the
  topology, the best any overlay could do).
"""

from __future__ import annotations

import itertools
import math
import random
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import networkx as nx

from gossipmesh.icmp import internet_checksum
from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.metrics import mean, percentile

if TYPE_CHECKING:
    from gossipmesh.node.core import NodeCore


class MetricParams(Protocol):
    """The mesh workload's knobs that measuring reads (`MeshParams`)."""

    @property
    def data_probe_interval(self) -> float: ...
    @property
    def data_probe_pairs(self) -> int: ...
    @property
    def data_probe_timeout(self) -> float: ...
    @property
    def metric_sources(self) -> int: ...
    @property
    def route_tolerance(self) -> float: ...
    @property
    def dht(self) -> str: ...
    @property
    def max_neighbours(self) -> int: ...
    @property
    def underlay_links_only(self) -> bool: ...


class ProbeSource(Protocol):
    def tun_packet(self, packet: bytes) -> None: ...


class MeshWorkload(Protocol):
    """What the collectors read of the mesh workload (which builds them: no import back)."""

    @property
    def params(self) -> MetricParams: ...
    @property
    def graph(self) -> Any: ...
    @property
    def view(self) -> Any: ...
    @property
    def host_by_id(self) -> dict[bytes, int]: ...
    @property
    def nodes(self) -> Mapping[int, ProbeSource]: ...
    def running_nodes(self) -> dict[int, NodeCore]: ...


__all__ = ["MeshMetrics", "ProbeDelivery", "echo_probe", "probe_serial"]

HOP_COST_MS = 100.0
MAX_PATH = 9
PROBE_MAGIC = b"gmsimprb"


class MeshMetrics:
    """Records known, routes optimal and route stretch, per sample and for the run."""

    name = "mesh"

    def __init__(self, workload: MeshWorkload, underlay: Any, rng: random.Random) -> None:
        self.workload = workload
        self.underlay = underlay
        self.rng = rng
        self.first_records_known: float | None = None
        self.first_routes_optimal: float | None = None
        self.first_routes_reachable: float | None = None
        self.degree_max = 0
        """The largest degree seen at any sample (the bound must hold throughout)."""
        self.last: dict[str, float] = {}
        self.stretch_rows: list[dict[str, Any]] = []
        self.jitter_ms = 0.0

    def _latency_ms(self, a: int, b: int) -> float:
        return float(self.underlay.latency(a, b)) * 1000.0

    def sample(self, now: float) -> dict[str, float]:
        nodes = self.workload.running_nodes()
        hosts = sorted(nodes)
        self.jitter_ms = self.workload.view.network.jitter * 1000.0
        ids = {host: nodes[host].identity.node_id for host in hosts}
        known_pairs = 0
        for host in hosts:
            directory = nodes[host].directory
            known_pairs += sum(1 for other in hosts if other != host and directory.get(ids[other]))
        pairs = len(hosts) * (len(hosts) - 1)
        records_known = known_pairs / pairs if pairs else math.nan

        by_id = self.workload.host_by_id
        neighbours = {
            host: {by_id[n] for n in nodes[host].routing.neighbours() if by_id.get(n) in nodes}
            for host in hosts
        }
        graph: nx.Graph[int] = nx.Graph()
        graph.add_nodes_from(hosts)
        for host in hosts:
            for other in neighbours[host]:
                if other > host and host in neighbours[other]:
                    weight = 2 * self._latency_ms(host, other) + HOP_COST_MS
                    graph.add_edge(host, other, weight=weight)
        sources = hosts
        limit = self.workload.params.metric_sources
        if len(hosts) > limit:
            sources = sorted(self.rng.sample(hosts, limit))
        component = self._possible_components(hosts)
        optimal = reachable = measured = cut_off = beyond = 0
        stretches: list[float] = []
        hops: list[int] = []
        rows: list[dict[str, Any]] = []
        for source in sources:
            best, best_paths = nx.single_source_dijkstra(graph, source, weight="weight")
            for target in hosts:
                if target == source:
                    continue
                if component[source] != component[target]:
                    cut_off += 1  # no overlay could route it: not counted
                    continue
                best_path = best_paths.get(target)
                if best_path is not None and len(best_path) - 1 > nodes[source].options.max_hops:
                    beyond += 1  # unreachable by design (routing's max_hops): not counted
                    continue
                measured += 1
                path = self._forwarding_path(source, target, nodes, neighbours, ids)
                if path is None:
                    continue
                reachable += 1
                cost = sum(
                    2 * self._latency_ms(a, b) + HOP_COST_MS for a, b in itertools.pairwise(path)
                )
                shortest = best.get(target)
                slack = 2 * self.jitter_ms * (len(path) - 1)
                tolerance = self.workload.params.route_tolerance
                if shortest is not None and cost <= shortest * (1 + tolerance) + slack + 1e-6:
                    optimal += 1
                overlay_ms = sum(self._latency_ms(a, b) for a, b in itertools.pairwise(path))
                underlay_ms = self._latency_ms(source, target)
                stretch = overlay_ms / underlay_ms if underlay_ms > 0 else 1.0
                stretches.append(stretch)
                hops.append(len(path) - 1)
                rows.append(
                    {
                        "time": now,
                        "source": source,
                        "target": target,
                        "hops": len(path) - 1,
                        "overlay_ms": round(overlay_ms, 6),
                        "underlay_ms": round(underlay_ms, 6),
                        "stretch": round(stretch, 6),
                    }
                )
        considered = measured + cut_off + beyond
        routes_optimal = optimal / measured if measured else math.nan
        routes_reachable = reachable / measured if measured else math.nan
        self.stretch_rows = rows
        if records_known == 1.0 and self.first_records_known is None:
            self.first_records_known = now
        if routes_optimal == 1.0 and self.first_routes_optimal is None:
            self.first_routes_optimal = now
        if routes_reachable == 1.0 and records_known == 1.0 and self.first_routes_reachable is None:
            self.first_routes_reachable = now
        degrees = [graph.degree(h) for h in hosts]
        self.degree_max = max(self.degree_max, max(degrees, default=0))
        self.last = {
            "records_known": records_known,
            "routes_reachable": routes_reachable,
            "routes_optimal": routes_optimal,
            "pairs_cut_off": cut_off / considered if considered else math.nan,
            "pairs_beyond_max_hops": beyond / considered if considered else math.nan,
            "mesh_degree": mean(degrees),
            "mesh_degree_max": max(degrees, default=0),
            "route_hops": mean(hops),
            "stretch_mean": mean(stretches),
            "stretch_p95": percentile(stretches, 0.95),
        }
        converged = records_known == 1.0 and routes_optimal == 1.0
        return {**self.last, "converged": 1.0 if converged else 0.0}

    def _possible_components(self, hosts: list[int]) -> dict[int, int]:
        """Component of each running host in the graph of pairs that may talk directly.

        With `underlay_links_only` that is the topology among running hosts,
        which crashes can split; otherwise every pair may talk: one component.
        """
        if not self.workload.params.underlay_links_only:
            return dict.fromkeys(hosts, 0)
        possible = self.workload.graph.subgraph(hosts)
        component = {}
        for number, members in enumerate(nx.connected_components(possible)):
            for host in members:
                component[host] = number
        return component

    def _forwarding_path(
        self,
        source: int,
        target: int,
        nodes: dict[int, NodeCore],
        neighbours: dict[int, set[int]],
        ids: dict[int, bytes],
    ) -> list[int] | None:
        """The hosts a packet from `source` to `target` visits, or None if it is lost."""
        path = [source]
        current = source
        target_id = ids[target]
        for _ in range(MAX_PATH):
            if target in neighbours[current]:
                path.append(target)
                return path
            next_id = nodes[current].routing.route(target_id)
            next_host = self.workload.host_by_id.get(next_id) if next_id else None
            if next_host is None or next_host not in nodes or next_host in path:
                return None
            if next_host not in neighbours[current]:
                return None
            path.append(next_host)
            if next_host == target:
                return path
            current = next_host
        return None

    def summary(self) -> dict[str, Any]:
        stretches = [float(row["stretch"]) for row in self.stretch_rows]
        return {
            "dht": self.workload.params.dht,
            "time_all_records_known": self.first_records_known,
            "time_all_routes_optimal": self.first_routes_optimal,
            "time_all_routes_reachable": self.first_routes_reachable,
            "mesh_degree_max_seen": self.degree_max,
            "max_neighbours": self.workload.params.max_neighbours,
            "final": dict(self.last),
            "stretch_median": percentile(stretches, 0.5),
            "stretch_p95": percentile(stretches, 0.95),
            "stretch_max": max(stretches) if stretches else math.nan,
            "stretch_pairs": len(stretches),
        }

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """`stretch`: every measured pair at the last sample (the CDF plot's data)."""
        return {"stretch": list(self.stretch_rows)}


def echo_probe(source: bytes, destination: bytes, serial: int, size: int = 56) -> bytes:
    """An IPv4 ICMP echo request as a TUN would hand it over, tagged with `serial`."""
    body = PROBE_MAGIC + struct.pack("!Q", serial)
    body += bytes(max(0, size - len(body)))
    icmp = struct.pack("!BBHHH", 8, 0, 0, serial & 0xFFFF, 1) + body
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), serial & 0xFFFF, 0x4000, 64, 1, 0,
        source, destination,
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + icmp


def probe_serial(packet: bytes) -> int | None:
    """The serial of a data probe written to a TUN, or None for any other packet."""
    if len(packet) < 44 or packet[0] != 0x45 or packet[9] != 1 or packet[20] != 8:
        return None
    if packet[28:36] != PROBE_MAGIC:
        return None
    return int.from_bytes(packet[36:44], "big")


class ProbeDelivery:
    """Echo requests between random live pairs through the nodes' TUNs; who received them."""

    name = "probes"

    def __init__(self, workload: MeshWorkload, rng: random.Random) -> None:
        self.workload = workload
        self.rng = rng
        self._scheduled = False
        self._serial = 0
        self.pending: dict[int, tuple[float, int]] = {}
        """serial -> (sent at, target host), until decided."""
        self.arrived: dict[int, float] = {}
        self.sent = 0
        self.delivered = 0
        self.decided = 0
        self.latencies: list[float] = []
        self._loop: VirtualTimeLoop | None = None
        churn = getattr(getattr(workload.view, "scenario", None), "churn", None)
        self.churn_window: tuple[float, float] | None = (
            None if churn is None else (churn.start, math.inf if churn.end is None else churn.end)
        )
        """Probes sent in the scenario's churn period are also counted on their own."""
        self.churn_decided = 0
        self.churn_delivered = 0

    def ensure_scheduled(self, loop: VirtualTimeLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop = loop
            loop.call_later(self.workload.params.data_probe_interval, self._inject)

    def _inject(self) -> None:
        loop = self._loop
        assert loop is not None
        params = self.workload.params
        loop.call_later(params.data_probe_interval, self._inject)
        nodes = self.workload.running_nodes()
        hosts = sorted(nodes)
        if len(hosts) < 2:
            return
        now = loop.time()
        for _ in range(params.data_probe_pairs):
            source, target = self.rng.sample(hosts, 2)
            a, b = nodes[source].ipv4, nodes[target].ipv4
            assert a is not None and b is not None
            self._serial += 1
            self.pending[self._serial] = (now, target)
            self.sent += 1
            self.workload.nodes[source].tun_packet(echo_probe(a.packed, b.packed, self._serial))

    def tun_written(self, host: int, packet: bytes) -> None:
        serial = probe_serial(packet)
        if serial is None or self._loop is None:
            return
        sent = self.pending.get(serial)
        if sent is not None and sent[1] == host and serial not in self.arrived:
            self.arrived[serial] = self._loop.time()

    def sample(self, now: float) -> dict[str, float]:
        timeout = self.workload.params.data_probe_timeout
        decided = delivered = 0
        for serial, (sent_at, _target) in list(self.pending.items()):
            if sent_at + timeout > now:
                continue
            del self.pending[serial]
            decided += 1
            arrived = self.arrived.pop(serial, None)
            ok = False
            if arrived is not None and arrived - sent_at <= timeout:
                ok = True
                delivered += 1
                self.latencies.append(arrived - sent_at)
            window = self.churn_window
            if window is not None and window[0] <= sent_at < window[1]:
                self.churn_decided += 1
                self.churn_delivered += ok
        self.decided += decided
        self.delivered += delivered
        return {"probe_delivery": delivered / decided if decided else math.nan}

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "decided": self.decided,
            "delivered": self.delivered,
            "delivery_ratio": self.delivered / self.decided if self.decided else math.nan,
            "churn_decided": self.churn_decided,
            "delivery_ratio_churn": (
                self.churn_delivered / self.churn_decided if self.churn_decided else math.nan
            ),
            "latency_median": percentile(self.latencies, 0.5),
            "latency_p95": percentile(self.latencies, 0.95),
        }

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {}
