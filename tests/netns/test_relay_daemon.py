"""When the underlay between two nodes breaks, traffic flows through a third.

nftables inside alpha's namespace drops everything to and from charlie's
underlay address, so alpha and charlie lose their direct link while both
still reach bravo. The daemons run with `timer_scale = 4` (a config file
setting that divides protocol timers: liveness, gossip, and the node's probe
round for direct paths, 10 s -> 2.5 s) so the switch both ways fits the
test's time budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh_lab import (
    DaemonNode,
    MeshLab,
    assert_full_size_packets_pass,
    ping_until,
    require_daemon_lab,
)
from tests.support.netns import NetnsLab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

TIMER_SCALE = 4
SWITCH_TIMEOUT = 30.0


def block_underlay(node: DaemonNode, other: DaemonNode) -> str:
    """Drop every packet between `node` and `other`'s underlay address; returns the table."""
    table = f"gmblock{other.name}"
    rules = f"""
table inet {table} {{
    chain input {{ type filter hook input priority -10; ip saddr {other.underlay} drop; }}
    chain output {{ type filter hook output priority -10; ip daddr {other.underlay} drop; }}
}}
"""
    node.namespace.run(["nft", "-f", "-"], input=rules)
    return table


def path_to(node: DaemonNode, other: DaemonNode) -> dict[str, Any]:
    row = node.peer(other)
    assert row is not None, f"{node.name} does not know {other.name}"
    return row


def test_blocked_underlay_goes_through_a_relay_and_back_to_direct(tmp_path: Path) -> None:
    require_daemon_lab("ping", "nft")
    with NetnsLab() as netns:
        mesh = MeshLab(netns, tmp_path, settings={"timer_scale": TIMER_SCALE})
        alpha, bravo, charlie = mesh.add_nodes("alpha", "bravo", "charlie")
        mesh.start_all()
        mesh.wait_full_mesh()
        ping_until(alpha, charlie.ipv4)
        wait_until(
            lambda: path_to(alpha, charlie)["path"] == "direct",
            SWITCH_TIMEOUT,
            0.2,
            "alpha to reach charlie directly",
        )

        table = block_underlay(alpha, charlie)
        underlay_ping = ["ping", "-c", "1", "-W", "1", charlie.underlay]
        assert alpha.namespace.run(underlay_ping, check=False).returncode != 0, (
            "the nftables rule does not block the underlay"
        )
        wait_until(
            lambda: _relayed_via(alpha, charlie, bravo) and _relayed_via(charlie, alpha, bravo),
            SWITCH_TIMEOUT,
            0.2,
            "alpha's and charlie's peers to show each other relayed via bravo",
        )
        ping_until(alpha, charlie.ipv4, SWITCH_TIMEOUT)
        ping_until(alpha, charlie.ipv6, SWITCH_TIMEOUT)
        ping_until(charlie, alpha.ipv4, SWITCH_TIMEOUT)
        assert_full_size_packets_pass(alpha, charlie)  # the relay's extra framing still fits
        mesh_ping = alpha.cli_json("ping", charlie.name, "--count", "2")
        answered = [probe for probe in mesh_ping["probes"] if probe["rtt_ms"] is not None]
        assert answered, mesh_ping
        for probe in answered:
            assert probe["path"].startswith("relayed"), mesh_ping
            assert bravo.name in probe["path"], mesh_ping

        alpha.namespace.run(["nft", "delete", "table", "inet", table])
        wait_until(
            lambda: (
                path_to(alpha, charlie)["path"] == "direct"
                and path_to(charlie, alpha)["path"] == "direct"
            ),
            SWITCH_TIMEOUT,
            0.2,
            "alpha's and charlie's peers to show each other direct again",
        )
        ping_until(alpha, charlie.ipv4, SWITCH_TIMEOUT)
        mesh_ping = alpha.cli_json("ping", charlie.name, "--count", "1")
        assert mesh_ping["probes"][0]["path"] == f"direct {charlie.endpoint}", mesh_ping

        # A node that leaves is no longer shown as reachable, though its session lingers.
        assert charlie.terminate() == 0
        wait_until(
            lambda: path_to(alpha, charlie)["path"] == "none",
            SWITCH_TIMEOUT,
            0.2,
            "alpha's peers to show charlie gone",
        )


def _relayed_via(node: DaemonNode, other: DaemonNode, relay: DaemonNode) -> bool:
    row = path_to(node, other)
    return bool(row["path"] == "relayed" and row["via"] == relay.name)
