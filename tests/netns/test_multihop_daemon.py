"""Two relays in a row: a line of four nodes where each reaches only its neighbours.

All four sit on one bridge, and nftables inside each namespace silently drops
underlay packets from every node that is not next to it in the line alpha -
bravo - charlie - delta (an input rule on both ends blocks both directions).
alpha's packets to delta must cross bravo and charlie, each re-wrapping them
in its own session. Timers run 4x faster (`timer_scale`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mesh_lab import (
    DaemonNode,
    MeshLab,
    assert_full_size_packets_pass,
    ping_until,
    require_daemon_lab,
)
from tests.support.netns import NetnsLab, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
]

CONVERGE_TIMEOUT = 45.0


def allow_only(node: DaemonNode, neighbours: list[DaemonNode], everyone: list[DaemonNode]) -> None:
    """Silently drop underlay packets that reach `node` from nodes that are not neighbours."""
    blocked = [
        other.underlay for other in everyone if other is not node and other not in neighbours
    ]
    addresses = ", ".join(blocked)
    node.namespace.run(
        ["nft", "-f", "-"],
        input=f"""
table inet gmline {{
    chain input {{ type filter hook input priority -10; ip saddr {{ {addresses} }} drop; }}
}}
""",
    )


def test_packets_cross_two_relays_in_a_line(tmp_path: Path) -> None:
    require_daemon_lab("ping", "nft")
    with NetnsLab() as netns:
        mesh = MeshLab(netns, tmp_path, settings={"timer_scale": 4})
        line = mesh.add_nodes("alpha", "bravo", "charlie", "delta")
        alpha, bravo, charlie, delta = line
        for index, node in enumerate(line):
            allow_only(node, line[max(0, index - 1) : index] + line[index + 1 : index + 2], line)
        bravo.start()
        for node, bootstrap in ((alpha, bravo), (charlie, bravo), (delta, charlie)):
            node.start([bootstrap])
        mesh.wait_full_mesh(CONVERGE_TIMEOUT)

        ping_until(alpha, delta.ipv4, CONVERGE_TIMEOUT)
        ping_until(delta, alpha.ipv6, CONVERGE_TIMEOUT)
        assert_full_size_packets_pass(alpha, delta)
        row = alpha.peer(delta)
        assert row is not None and row["path"] == "relayed" and row["via"] == bravo.name, row
        answer = alpha.cli_json("ping", delta.name, "--count", "1")
        assert answer["probes"][0]["path"] == f"relayed {bravo.name} -> {charlie.name} -> delta", (
            answer
        )
        wait_until(lambda: all(n.running() for n in line), 1, what="every daemon still up")
