"""Shortest paths over the links both ends agree on; next hops that never loop.

Graph: an edge u-v exists only when u's record lists v *and* v's record
lists u, so a forged or stale one-sided claim cannot attract traffic, and
one end dropping a link removes it at once. Its weight, in integer
microseconds, is the larger of the two measured RTTs plus `HOP_COST_US`
(the issue's metric: RTT in ms + 100 per hop), so it is symmetric.

Tie-breaking: routes are ordered by (metric, hop count, next hop node id),
all compared exactly (integers). A node's route to D goes to the neighbour u
minimising (w(self, u) + metric(u, D), 1 + hops(u, D), u). Because every node
applies the same rule to the same view, u's own route to D has exactly one
hop fewer: forwarding strictly decreases the hop count, so it cannot loop,
and a path within `max_hops` stays within it at every relay. A destination
whose best path is longer than `max_hops` is unreachable (it is not re-routed
over a costlier shorter path, which would break that agreement).

Cost: one Dijkstra from this node per recomputation. The rule above needs
each neighbour's (metric, hops) toward every destination, but a neighbour u
achieves the minimum exactly when the edge to u starts a best path, so one
search by (metric, hops) that carries the least first hop along every best
path gives the same routes as a search from each neighbour (tests compare
both). `AgreedGraph` keeps the graph up to date one record at a time, so a
recomputation does not walk every record either. Full paths (for
`gossipmesh routes`) take one Dijkstra per destination and are computed only
when asked for.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gossipmesh.routing.linkstate import LinkStateRecord

HOP_COST_US = 100_000
DEFAULT_MAX_HOPS = 8

Graph = Mapping[bytes, Mapping[bytes, int]]
"""node -> neighbour -> edge weight in microseconds (symmetric)."""


def agreed_graph(records: Iterable[LinkStateRecord]) -> dict[bytes, dict[bytes, int]]:
    """The undirected weighted graph of links listed by both of their ends."""
    claims = {r.origin: r.neighbours() for r in records if not r.leaving}
    graph: dict[bytes, dict[bytes, int]] = {}
    for origin, links in claims.items():
        for neighbour, rtt_us in links.items():
            back = claims.get(neighbour, {}).get(origin)
            if back is not None:
                graph.setdefault(origin, {})[neighbour] = max(rtt_us, back) + HOP_COST_US
    return graph


class AgreedGraph:
    """`agreed_graph` of a changing record set, updated in place one origin at a time.

    `snapshot()` hands out the current graph for a route table; the next
    change copies only what it touches (the outer dict and the changed
    nodes' dicts), so a table keeps the graph it was computed from.
    """

    def __init__(self) -> None:
        self._claims: dict[bytes, Mapping[bytes, int]] = {}
        self._graph: dict[bytes, dict[bytes, int]] = {}
        self._shared = False
        self._owned: set[bytes] = set()
        """Nodes whose edge dict was copied since the last snapshot."""

    def set(self, record: LinkStateRecord) -> None:
        """Take `record` as its origin's current claim (a leaving record claims nothing)."""
        self._replace(record.origin, {} if record.leaving else record.neighbours())

    def remove(self, origin: bytes) -> None:
        self._replace(origin, {})

    def snapshot(self) -> Graph:
        self._shared = True
        return self._graph

    def _edges(self, node: bytes) -> dict[bytes, int]:
        if self._shared:
            self._graph = dict(self._graph)
            self._owned = set()
            self._shared = False
        edges = self._graph.get(node)
        if edges is None:
            edges = self._graph[node] = {}
            self._owned.add(node)
        elif node not in self._owned:
            edges = self._graph[node] = dict(edges)
            self._owned.add(node)
        return edges

    def _unlink(self, a: bytes, b: bytes) -> None:
        if b in self._graph.get(a, ()):
            edges = self._edges(a)
            del edges[b]
            if not edges:
                del self._graph[a]

    def _replace(self, origin: bytes, links: Mapping[bytes, int]) -> None:
        old = self._claims.pop(origin, {})
        for neighbour in old:
            self._unlink(origin, neighbour)
            self._unlink(neighbour, origin)
        if not links:
            return
        self._claims[origin] = links
        for neighbour, rtt_us in links.items():
            back = self._claims.get(neighbour, {}).get(origin)
            if back is not None:
                weight = max(rtt_us, back) + HOP_COST_US
                self._edges(origin)[neighbour] = weight
                self._edges(neighbour)[origin] = weight


def shortest_from(graph: Graph, source: bytes) -> dict[bytes, tuple[int, int]]:
    """node -> (metric, hops) of the best path from `source`, by (metric, hops)."""
    best: dict[bytes, tuple[int, int]] = {source: (0, 0)}
    queue: list[tuple[int, int, bytes]] = [(0, 0, source)]
    while queue:
        metric, hops, node = heapq.heappop(queue)
        if best.get(node, (metric, hops)) < (metric, hops):
            continue
        for neighbour, weight in graph.get(node, {}).items():
            candidate = (metric + weight, hops + 1)
            known = best.get(neighbour)
            if known is None or candidate < known:
                best[neighbour] = candidate
                heapq.heappush(queue, (candidate[0], candidate[1], neighbour))
    return best


@dataclass(frozen=True)
class Route:
    destination: bytes
    next_hop: bytes
    metric_us: int
    hops: int

    @property
    def metric_ms(self) -> float:
        return self.metric_us / 1000


def _choose(
    graph: Graph, node: bytes, toward: Mapping[bytes, tuple[int, int]]
) -> tuple[int, int, bytes] | None:
    """(metric, hops, next hop) from `node` given every node's (metric, hops) toward one place."""
    best: tuple[int, int, bytes] | None = None
    for neighbour, weight in graph.get(node, {}).items():
        rest = toward.get(neighbour)
        if rest is None:
            continue
        candidate = (weight + rest[0], 1 + rest[1], neighbour)
        if best is None or candidate < best:
            best = candidate
    return best


def _best_routes(graph: Graph, source: bytes) -> dict[bytes, tuple[int, int, bytes]]:
    """destination -> (metric, hops, least first hop among its best paths) from `source`.

    Dijkstra by (metric, hops). Every edge adds at least `HOP_COST_US` and a
    hop, so all predecessors of a node on its best paths are settled before
    it, and the least first hop over them is final when it is popped.
    """
    best: dict[bytes, tuple[int, int]] = {source: (0, 0)}
    first: dict[bytes, bytes] = {}
    queue: list[tuple[int, int, bytes]] = [(0, 0, source)]
    while queue:
        metric, hops, node = heapq.heappop(queue)
        if best[node] < (metric, hops):
            continue
        via = first.get(node)
        for neighbour, weight in graph.get(node, {}).items():
            candidate = (metric + weight, hops + 1)
            hop = neighbour if via is None else via
            known = best.get(neighbour)
            if known is None or candidate < known:
                best[neighbour] = candidate
                first[neighbour] = hop
                heapq.heappush(queue, (candidate[0], candidate[1], neighbour))
            elif candidate == known and hop < first[neighbour]:
                first[neighbour] = hop
    del best[source]
    return {node: (m, h, first[node]) for node, (m, h) in best.items()}


class RouteTable:
    """An immutable routing table for one node and one view of the graph."""

    def __init__(self, own_id: bytes, graph: Graph, max_hops: int = DEFAULT_MAX_HOPS) -> None:
        self.own_id = own_id
        self.graph = graph
        self.max_hops = max_hops
        self.routes: dict[bytes, Route] = {}
        best = _best_routes(graph, own_id)
        for destination in sorted(best):
            metric, hops, next_hop = best[destination]
            if hops <= max_hops:
                self.routes[destination] = Route(destination, next_hop, metric, hops)
        self._paths: dict[bytes, tuple[bytes, ...]] = {}

    @classmethod
    def from_records(
        cls, own_id: bytes, records: Iterable[LinkStateRecord], max_hops: int = DEFAULT_MAX_HOPS
    ) -> RouteTable:
        return cls(own_id, agreed_graph(records), max_hops)

    def next_hop(self, destination: bytes) -> bytes | None:
        route = self.routes.get(destination)
        return route.next_hop if route else None

    def path(self, destination: bytes) -> tuple[bytes, ...] | None:
        """The node ids a packet to `destination` visits, ourselves first (computed on demand)."""
        route = self.routes.get(destination)
        if route is None:
            return None
        cached = self._paths.get(destination)
        if cached is not None:
            return cached
        toward = shortest_from(self.graph, destination)
        path = [self.own_id, route.next_hop]
        while path[-1] != destination and len(path) <= self.max_hops + 1:
            step = _choose(self.graph, path[-1], toward)
            if step is None:
                break
            path.append(step[2])
        result = tuple(path)
        self._paths[destination] = result
        return result

    def same_routes(self, other: RouteTable) -> bool:
        return self.routes == other.routes
