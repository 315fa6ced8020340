"""The one-search route table and the incremental graph against their definitions.

`RouteTable` runs one Dijkstra from its own node; the documented rule asks
for the best (metric, hops, next hop) over each neighbour's own shortest
paths, which `reference_routes` computes literally (one search from every
neighbour). `AgreedGraph` must equal `agreed_graph` over the records held
after any sequence of changes, and a snapshot must not move afterwards.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.identity import Identity
from gossipmesh.routing.linkstate import Link, LinkStateRecord
from gossipmesh.routing.table import (
    AgreedGraph,
    Graph,
    Route,
    RouteTable,
    agreed_graph,
    shortest_from,
)

IDENTITIES = [Identity.from_seed(hashlib.sha256(b"t%d" % i).digest()) for i in range(7)]
IDS = [identity.node_id for identity in IDENTITIES]
RTTS = [0, 1000, 2000, 100_000]
"""Few distinct RTTs: equal-metric paths (ties) are common."""


def reference_routes(own: bytes, graph: Graph, max_hops: int) -> dict[bytes, Route]:
    """The rule as the module docstring states it: a search from every neighbour."""
    from_neighbour = {n: shortest_from(graph, n) for n in graph.get(own, {})}
    destinations = set().union(*from_neighbour.values()) - {own} if from_neighbour else set()
    routes = {}
    for destination in destinations:
        candidates = [
            (weight + rest[0], 1 + rest[1], neighbour)
            for neighbour, weight in graph[own].items()
            if (rest := from_neighbour[neighbour].get(destination)) is not None
        ]
        metric, hops, next_hop = min(candidates)
        if hops <= max_hops:
            routes[destination] = Route(destination, next_hop, metric, hops)
    return routes


links = st.dictionaries(st.integers(0, len(IDS) - 1), st.sampled_from(RTTS), max_size=5)
change = st.tuples(
    st.integers(0, len(IDS) - 1), st.one_of(st.none(), links), st.booleans()
)  # (origin, links or None = remove, leaving)


def _record(origin: int, sequence: int, chosen: dict[int, int], leaving: bool) -> LinkStateRecord:
    return LinkStateRecord.create(
        IDENTITIES[origin],
        sequence=sequence,
        issued_at_ms=0,
        expires_at_ms=1000,
        links=[] if leaving else [Link(IDS[n], rtt) for n, rtt in chosen.items()],
        leaving=leaving,
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(change, min_size=1, max_size=30), st.integers(1, 4))
def test_incremental_graph_and_one_search_match_their_definitions(
    changes: list[tuple[int, dict[int, int] | None, bool]], max_hops: int
) -> None:
    graph = AgreedGraph()
    held: dict[bytes, LinkStateRecord] = {}
    snapshots: list[tuple[Graph, dict[bytes, dict[bytes, int]]]] = []
    for sequence, (origin, chosen, leaving) in enumerate(changes, start=1):
        if chosen is None:
            held.pop(IDS[origin], None)
            graph.remove(IDS[origin])
        else:
            record = _record(origin, sequence, chosen, leaving)
            held[IDS[origin]] = record
            graph.set(record)
        expected = agreed_graph(held.values())
        snapshot = graph.snapshot()
        assert snapshot == expected
        snapshots.append((snapshot, {k: dict(v) for k, v in expected.items()}))
        for own in IDS:
            assert RouteTable(own, snapshot, max_hops).routes == reference_routes(
                own, expected, max_hops
            )
    for snapshot, copy in snapshots:
        assert snapshot == copy


def test_a_tie_found_later_with_a_lower_first_hop_wins() -> None:
    """Two equal paths to d; the one through the lower first hop is settled second."""
    s, a, b, x, y, d = sorted(IDS)[:6]
    # s-a-y-d and s-b-x-d cost the same; x < y is settled first, carrying first hop b > a.
    edges = [(s, a), (s, b), (a, y), (b, x), (x, d), (y, d)]
    graph: dict[bytes, dict[bytes, int]] = {}
    for u, v in edges:
        graph.setdefault(u, {})[v] = graph.setdefault(v, {})[u] = 100_000
    table = RouteTable(s, graph)
    assert table.routes[d] == Route(d, a, 300_000, 3)
    assert table.routes == reference_routes(s, graph, 8)
