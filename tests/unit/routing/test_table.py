"""Route tables against networkx: shortest under the metric, consistent, loop-free."""

from __future__ import annotations

import hashlib

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.identity import Identity
from gossipmesh.routing.linkstate import Link, LinkStateRecord
from gossipmesh.routing.table import HOP_COST_US, RouteTable, agreed_graph

IDENTITIES = [Identity.from_seed(hashlib.sha256(bytes([i])).digest()) for i in range(12)]
IDS = [identity.node_id for identity in IDENTITIES]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, dict[tuple[int, int], int], int]:
    count = draw(st.integers(min_value=2, max_value=10))
    pairs = [(a, b) for a in range(count) for b in range(a + 1, count)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    # Few distinct RTTs, so that equal-metric paths (ties) are common.
    rtts = {pair: draw(st.sampled_from([0, 1000, 2000, 100_000, 200_000])) for pair in chosen}
    max_hops = draw(st.integers(min_value=1, max_value=8))
    return count, rtts, max_hops


def oracle(count: int, rtts: dict[tuple[int, int], int]) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(IDS[:count])
    for (a, b), rtt in rtts.items():
        graph.add_edge(IDS[a], IDS[b], weight=rtt + HOP_COST_US)
    return graph


def tables(count: int, rtts: dict[tuple[int, int], int], max_hops: int) -> dict[bytes, RouteTable]:
    graph: dict[bytes, dict[bytes, int]] = {}
    for (a, b), rtt in rtts.items():
        graph.setdefault(IDS[a], {})[IDS[b]] = rtt + HOP_COST_US
        graph.setdefault(IDS[b], {})[IDS[a]] = rtt + HOP_COST_US
    return {IDS[i]: RouteTable(IDS[i], graph, max_hops) for i in range(count)}


def fewest_hops_among_shortest(graph: nx.Graph, source: bytes, target: bytes) -> int:
    return min(len(p) - 1 for p in nx.all_shortest_paths(graph, source, target, weight="weight"))


@settings(max_examples=120, deadline=None)
@given(graphs())
def test_routes_are_shortest_consistent_and_loop_free(
    case: tuple[int, dict[tuple[int, int], int], int],
) -> None:
    count, rtts, max_hops = case
    reference = oracle(count, rtts)
    views = tables(count, rtts, max_hops)
    lengths = dict(nx.all_pairs_dijkstra_path_length(reference, weight="weight"))
    for source, table in views.items():
        for target in IDS[:count]:
            if target == source:
                assert target not in table.routes
                continue
            route = table.routes.get(target)
            if target not in lengths[source]:
                assert route is None
                continue
            hops = fewest_hops_among_shortest(reference, source, target)
            if hops > max_hops:
                assert route is None
                continue
            # Shortest under the metric, and the fewest hops among the shortest.
            assert route is not None
            assert route.metric_us == lengths[source][target]
            assert route.hops == hops
            # The next hop's own route is this one minus the first link: views agree.
            neighbour_route = views[route.next_hop].routes.get(target)
            if route.next_hop == target:
                assert route.hops == 1
            else:
                assert neighbour_route is not None
                assert neighbour_route.hops == route.hops - 1
                weight = reference[source][route.next_hop]["weight"]
                assert neighbour_route.metric_us == route.metric_us - weight
            # Following next hops reaches the target in exactly route.hops steps.
            at, steps, visited, walk = source, 0, {source}, [source]
            while at != target:
                next_hop = views[at].next_hop(target)
                assert next_hop is not None and next_hop not in visited
                assert reference.has_edge(at, next_hop)
                visited.add(next_hop)
                walk.append(next_hop)
                at, steps = next_hop, steps + 1
                assert steps <= max_hops
            assert steps == route.hops
            # The displayed path is the forwarding path.
            path = table.path(target)
            assert path == tuple(walk)


def record(index: int, neighbours: dict[int, int]) -> LinkStateRecord:
    return LinkStateRecord.create(
        IDENTITIES[index],
        sequence=1,
        issued_at_ms=0,
        expires_at_ms=1000,
        links=[Link(IDS[n], rtt) for n, rtt in neighbours.items()],
    )


def test_one_sided_claims_do_not_make_edges() -> None:
    records = [
        record(0, {1: 5000}),
        record(1, {0: 7000, 2: 1000}),  # 2 does not list 1: no edge 1-2.
        record(2, {}),
        record(3, {0: 1}),  # a forged claim of a 1 µs link to 0, which 0 does not list.
    ]
    graph = agreed_graph(records)
    assert graph == {
        IDS[0]: {IDS[1]: 7000 + HOP_COST_US},
        IDS[1]: {IDS[0]: 7000 + HOP_COST_US},
    }
    table = RouteTable.from_records(IDS[0], records)
    assert set(table.routes) == {IDS[1]}


def test_direct_link_beats_one_relay_which_beats_two() -> None:
    records = [
        record(0, {1: 80_000, 2: 1000}),
        record(1, {0: 80_000, 2: 1000, 3: 1000}),
        record(2, {0: 1000, 1: 1000}),
        record(3, {1: 1000}),
    ]
    table = RouteTable.from_records(IDS[0], records)
    assert table.routes[IDS[1]].next_hop == IDS[1]  # 180 ms direct < 202 ms via 2
    assert table.routes[IDS[3]].hops == 2
    assert table.path(IDS[3]) == (IDS[0], IDS[1], IDS[3])


def test_ties_break_by_hops_then_smallest_next_hop_id() -> None:
    a, b = sorted([1, 2], key=lambda i: IDS[i])
    records = [
        record(0, {1: 1000, 2: 1000}),
        record(1, {0: 1000, 3: 1000}),
        record(2, {0: 1000, 3: 1000}),
        record(3, {1: 1000, 2: 1000}),
    ]
    table = RouteTable.from_records(IDS[0], records)
    assert table.routes[IDS[3]].next_hop == IDS[a] != IDS[b]


def test_max_hops_limits_reach() -> None:
    line = [record(i, {j: 1000 for j in (i - 1, i + 1) if 0 <= j < 6}) for i in range(6)]
    table = RouteTable.from_records(IDS[0], line, max_hops=3)
    assert set(table.routes) == {IDS[1], IDS[2], IDS[3]}
