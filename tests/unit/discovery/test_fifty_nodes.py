"""Issue 4's acceptance test: 50 DHT nodes on loopback, bootstrapped from one.

Every node finds every other node's record by id and by name; after 10 are
stopped, lookups of the rest still succeed and the stopped ones' records
expire. Prints the time to full discovery and the bytes each node sent
(run with -s to see them).
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter

import pytest

from gossipmesh.records import NodeRecord
from tests.unit.discovery.loopback import LoopbackNode, closing, open_node, run, wait_for

NODES = 50
STOPPED = 10
LIFETIME = 20
"""Short so that expiry is observable within the test, yet longer than the republish
interval plus one publication slowed by timeouts to the stopped nodes."""
OPTIONS = dict(record_lifetime=LIFETIME, republish_interval=6.0, rpc_timeout=1.0)
"""The rpc timeout leaves room for the one shared event loop being busy with 50 nodes:
a reply handled late counts as lost, and kademlia then drops a live peer."""
CONCURRENT_LOOKUPS = 96


async def _discover(
    seekers: list[LoopbackNode],
    targets: list[LoopbackNode],
    semaphore: asyncio.Semaphore,
    max_rounds: int = 3,
) -> tuple[set[tuple[int, int]], int]:
    """Look every target up from every seeker, by id and by name; retry only the
    pairs that failed, up to `max_rounds`. Returns the pairs still failing and
    the rounds used."""

    async def check(i: int, j: int) -> tuple[int, int] | None:
        seeker, target = seekers[i], targets[j]
        async with semaphore:
            by_id = await seeker.discovery.lookup_node(target.identity.node_id)
            by_name = await seeker.discovery.lookup_name(target.name)
        # Compared by key, not by value: records are republished (new sequence) meanwhile.
        ok = all(
            isinstance(found, NodeRecord)
            and found.public_key == target.identity.public_key
            and found.name == target.name
            for found in (by_id, by_name)
        )
        return None if ok else (i, j)

    pending = {
        (i, j)
        for i in range(len(seekers))
        for j in range(len(targets))
        if seekers[i] is not targets[j]
    }
    rounds = 0
    while pending and rounds < max_rounds:
        rounds += 1
        results = await asyncio.gather(*(check(i, j) for i, j in sorted(pending)))
        pending = {pair for pair in results if pair is not None}
        print(f"round {rounds}: {len(pending)} pairs missing")
    return pending, rounds


@pytest.mark.slow
def test_fifty_nodes_discover_each_other_and_forget_stopped_ones() -> None:
    run(_fifty_nodes(), timeout=100)


async def _fifty_nodes() -> None:
    loop = asyncio.get_running_loop()
    nodes = [await open_node(f"node-{i:02d}", **OPTIONS) for i in range(NODES)]  # type: ignore[arg-type]
    async with closing(nodes):
        began = loop.time()
        await nodes[0].discovery.start()
        await asyncio.gather(*(n.discovery.start([nodes[0].address]) for n in nodes[1:]))
        unpublished = nodes
        for _attempt in range(3):  # a loaded machine can time out every store of one try
            results = await asyncio.gather(
                *(n.discovery.publish(*n.templates()) for n in unpublished)
            )
            unpublished = [n for n, r in zip(unpublished, results, strict=True) if not r.ok]
            if not unpublished:
                break
        assert not unpublished, [n.name for n in unpublished]
        joined = loop.time() - began
        joined_sent = [n.discovery.stats.bytes_sent for n in nodes]

        semaphore = asyncio.Semaphore(CONCURRENT_LOOKUPS)
        missing, rounds = await _discover(nodes, nodes, semaphore)
        full_discovery = loop.time() - began
        assert not missing, f"not found after {rounds} rounds: {sorted(missing)[:10]}"
        sent = [n.discovery.stats.bytes_sent for n in nodes]
        print(
            f"\n{NODES} nodes: joined+published in {joined:.2f} s, full discovery "
            f"({NODES * (NODES - 1)} pairs by id and by name) in {full_discovery:.2f} s "
            f"({rounds} round(s)); bytes sent per node: mean {statistics.mean(sent):.0f}, "
            f"max {max(sent)} (of which join+publish: mean {statistics.mean(joined_sent):.0f}, "
            f"max {max(joined_sent)})"
        )

        stopped, alive = nodes[:STOPPED], nodes[STOPPED:]
        last_expiry = 0
        # Node 0 is the bootstrap node: stopping it shows the mesh no longer needs it.
        for node in stopped:
            node_record = node.discovery.current_node_record()
            name_record = node.discovery.current_name_record()
            assert node_record is not None and name_record is not None
            last_expiry = max(last_expiry, node_record.expires_at, name_record.expires_at)
            await node.close()
        stopped_at = loop.time()

        missing, rounds = await _discover(alive, alive, semaphore)
        assert not missing, f"not found after {rounds} rounds: {sorted(missing)[:10]}"
        print(
            f"after stopping {STOPPED}: all lookups among the rest done in "
            f"{loop.time() - stopped_at:.1f} s"
        )

        # The stopped nodes' last records expire at a known time; until then peers may
        # rightly serve them. After it, no one may.
        sample = alive[:5]
        clock = alive[0].discovery
        assert await wait_for(lambda: clock.now() >= last_expiry, timeout=LIFETIME + 5)

        async def stopped_ones_gone() -> bool:
            found = await asyncio.gather(
                *(s.discovery.lookup_node(t.identity.node_id) for s in sample for t in stopped),
                *(s.discovery.lookup_name(t.name) for s in sample for t in stopped),
            )
            return all(record is None for record in found)

        assert await stopped_ones_gone()
        print(f"stopped nodes' records gone {loop.time() - stopped_at:.1f} s after stop")
        assert sum(n.discovery.stats.rpc_malformed for n in nodes) == 0
        assert sum(n.discovery.stats.rpc_errors for n in nodes) == 0
        print("refusals:", sum((n.discovery.stats.refused for n in nodes), Counter()))
