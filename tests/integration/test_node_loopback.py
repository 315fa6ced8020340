"""Real nodes over loopback UDP: discovery, direct sessions, relayed paths, mesh ping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.loopback_mesh import LoopbackMesh, echo_request, wait_for

pytestmark = pytest.mark.timeout(120)


def _reaches(mesh: LoopbackMesh, source: int, target: int, ident: int) -> bool:
    """Send one echo request from `source` to `target`'s IPv4; did it arrive there?"""
    a, b = mesh.nodes[source], mesh.nodes[target]
    assert a.ipv4 is not None and b.ipv4 is not None
    packet = echo_request(a.ipv4, b.ipv4, ident)
    a.tun_packet(packet)
    return packet in mesh.transports[target].delivered


def test_three_nodes_reach_each_other_directly(tmp_path: Path) -> None:
    async def scenario() -> None:
        mesh = LoopbackMesh(3, tmp_path)
        await mesh.open()
        try:
            await mesh.start_all(lambda i: [] if i == 0 else [0])
            for source in range(3):
                for target in range(3):
                    if source == target:
                        continue
                    ident = source * 10 + target
                    await wait_for(
                        lambda s=source, t=target, i=ident: _reaches(mesh, s, t, i),
                        30,
                        f"a packet from node{source} to node{target}",
                    )
            for node in mesh.nodes:
                rows = {row["name"]: row for row in node.peers()}
                assert len(rows) == 2
                assert all(row["path"] == "direct" for row in rows.values()), rows
            for node in mesh.nodes:  # what the control socket serves must be JSON
                json.dumps([node.status(), node.peers(), node.routes()])
            result = await mesh.nodes[0].ping("node2.mesh", count=2)
            assert all(p["rtt_ms"] is not None for p in result["probes"]), result
            assert result["probes"][0]["path"].startswith("direct")
        finally:
            await mesh.close()

    asyncio.run(scenario())


def test_line_of_three_relays_through_the_middle(tmp_path: Path) -> None:
    """0 and 2 cannot talk directly (enforced in the transport): traffic goes via 1."""

    async def scenario() -> None:
        mesh = LoopbackMesh(3, tmp_path, allowed={frozenset((0, 1)), frozenset((1, 2))})
        await mesh.open()
        try:
            await mesh.start_all(lambda i: [] if i == 1 else [1])
            await wait_for(lambda: _reaches(mesh, 0, 2, 1), 60, "a relayed packet 0 -> 2")
            await wait_for(lambda: _reaches(mesh, 2, 0, 2), 30, "a relayed packet 2 -> 0")
            rows = {row["name"]: row for row in mesh.nodes[0].peers()}
            assert rows["node2"]["path"] == "relayed" and rows["node2"]["via"] == "node1"
            assert rows["node1"]["path"] == "direct"
            result = await mesh.nodes[0].ping("node2", count=1)
            assert result["probes"][0]["rtt_ms"] is not None
            assert result["probes"][0]["path"] == "relayed node1 -> node2"
        finally:
            await mesh.close()

    asyncio.run(scenario())
