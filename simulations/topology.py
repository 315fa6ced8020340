"""Underlay topologies: who is linked to whom, and with what latency.

A topology is a networkx graph whose edges carry `latency` in seconds. The
underlay latency between any two hosts is the shortest path in that graph,
computed per source on first use and kept as a numpy row (8 bytes a pair).
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

__all__ = ["TOPOLOGY_KINDS", "ShortestPathUnderlay", "TopologyError", "build_topology"]

TOPOLOGY_KINDS = ("random_geometric", "waxman", "barabasi_albert", "latency_csv")


class TopologyError(ValueError):
    """A topology cannot be built from these parameters."""


FLOYD_WARSHALL_LIMIT = 1200
"""Up to this many hosts, all pairs at once (numpy Floyd-Warshall, ~N^3/1e9 s)."""


class ShortestPathUnderlay:
    """Latency between hosts = shortest path over the topology graph.

    Small graphs get every pair up front with a vectorised Floyd-Warshall;
    larger ones run Dijkstra per source on first use. Either way a row is
    a numpy array of one-way latencies in seconds.
    """

    def __init__(self, graph: nx.Graph) -> None:
        self.graph = graph
        self.size = graph.number_of_nodes()
        if sorted(graph.nodes) != list(range(self.size)):
            raise TopologyError("topology nodes must be numbered 0..N-1")
        self._rows: dict[int, np.ndarray] = {}
        if self.size <= FLOYD_WARSHALL_LIMIT:
            matrix = self._all_pairs()
            self._rows = {source: matrix[source] for source in range(self.size)}

    def _all_pairs(self) -> np.ndarray:
        matrix = np.full((self.size, self.size), np.inf)
        np.fill_diagonal(matrix, 0.0)
        for a, b, latency in self.graph.edges(data="latency"):
            matrix[a, b] = matrix[b, a] = min(matrix[a, b], latency)
        for via in range(self.size):
            np.minimum(matrix, matrix[:, via, None] + matrix[None, via, :], out=matrix)
        return matrix

    def row(self, source: int) -> np.ndarray:
        """Shortest-path latencies from `source` to every host."""
        row = self._rows.get(source)
        if row is None:
            lengths = nx.single_source_dijkstra_path_length(self.graph, source, weight="latency")
            row = np.full(self.size, np.inf)
            for target, length in lengths.items():
                row[target] = length
            self._rows[source] = row
        return row

    def latency(self, source: int, destination: int) -> float:
        row = self._rows.get(source)
        if row is None:
            row = self.row(source)
        return row.item(destination)  # type: ignore[no-any-return]


def _connect_components(graph: nx.Graph, positions: Mapping[int, Any], scale: float) -> None:
    """Join disconnected parts at their closest pair, so every host is reachable."""
    components = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: c[0])
    main = components[0]
    for other in components[1:]:
        best: tuple[float, int, int] | None = None
        for a in main:
            for b in other:
                d = math.dist(positions[a], positions[b])
                if best is None or d < best[0]:
                    best = (d, a, b)
        assert best is not None
        graph.add_edge(best[1], best[2], latency=best[0] * scale)
        main = main + other


def _geometric_latencies(graph: nx.Graph, scale: float, minimum: float) -> None:
    positions = nx.get_node_attributes(graph, "pos")
    for a, b in graph.edges:
        graph.edges[a, b]["latency"] = minimum + math.dist(positions[a], positions[b]) * scale
    if not nx.is_connected(graph):
        _connect_components(graph, positions, scale)


def build_topology(
    kind: str, size: int, params: Mapping[str, Any], seed: int, base_dir: Path | None = None
) -> nx.Graph:
    """Build a connected graph of `size` hosts with edge `latency` in seconds.

    Geometric kinds place hosts in the unit square; a link's latency is
    `min_link_ms + distance * ms_per_unit`. Barabasi-Albert has no geometry:
    link latencies are uniform in [min_link_ms, max_link_ms]. `latency_csv`
    reads an N x N matrix of one-way milliseconds (`path`, relative to the
    scenario file).
    """
    ms_per_unit = float(params.get("ms_per_unit", 100.0)) / 1000.0
    min_link = float(params.get("min_link_ms", 1.0)) / 1000.0
    if kind == "random_geometric":
        # 1.5 x the connectivity threshold sqrt(ln n / (pi n)): sparse, mostly connected.
        threshold = math.sqrt(math.log(max(size, 2)) / (math.pi * max(size, 2)))
        radius = float(params.get("radius", 1.5 * threshold))
        graph = nx.random_geometric_graph(size, radius, seed=seed)
        _geometric_latencies(graph, ms_per_unit, min_link)
    elif kind == "waxman":
        graph = nx.waxman_graph(
            size,
            beta=float(params.get("beta", 0.4)),
            alpha=float(params.get("alpha", 0.1)),
            seed=seed,
        )
        _geometric_latencies(graph, ms_per_unit, min_link)
    elif kind == "barabasi_albert":
        m = int(params.get("m", 2))
        if not 1 <= m < size:
            raise TopologyError(f"barabasi_albert needs 1 <= m < nodes (m={m}, nodes={size})")
        graph = nx.barabasi_albert_graph(size, m, seed=seed)
        high = float(params.get("max_link_ms", 50.0)) / 1000.0
        rng = random.Random(seed)
        for a, b in sorted(graph.edges):
            graph.edges[a, b]["latency"] = rng.uniform(min_link, high)
    elif kind == "latency_csv":
        graph = _graph_from_csv(params, size, base_dir)
    else:
        raise TopologyError(f"unknown topology kind {kind!r}; one of {', '.join(TOPOLOGY_KINDS)}")
    return graph


def _graph_from_csv(params: Mapping[str, Any], size: int, base_dir: Path | None) -> nx.Graph:
    if "path" not in params:
        raise TopologyError("latency_csv needs path = 'matrix.csv'")
    path = Path(str(params["path"]))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        with path.open(newline="") as handle:
            rows = [[float(cell) for cell in row] for row in csv.reader(handle) if row]
    except (OSError, ValueError) as exc:
        raise TopologyError(f"cannot read latency matrix {path}: {exc}") from None
    if len(rows) != size or any(len(row) != size for row in rows):
        raise TopologyError(f"{path}: need a {size} x {size} matrix for {size} nodes")
    graph = nx.Graph()
    graph.add_nodes_from(range(size))
    for a in range(size):
        for b in range(a + 1, size):
            ms = min(rows[a][b], rows[b][a])
            if ms < 0 or math.isnan(ms):
                raise TopologyError(f"{path}: row {a + 1} column {b + 1}: latency must be >= 0")
            if math.isfinite(ms):
                graph.add_edge(a, b, latency=ms / 1000.0)
    if size and not nx.is_connected(graph):
        raise TopologyError(f"{path}: the matrix leaves some hosts unreachable")
    return graph
