"""Stream links with a real Linux NAT: the bulk receiver behind the NAT connects out.

A public node `hub` sends bulk TCP to `alpha`, which sits behind a
masquerading router that drops unsolicited packets (tests/support/nat_lab.py).
hub's own offers cannot work: it would connect to the router's address,
where nothing forwards the TCP port. alpha receives the bulk as batches of
UDP datagrams and offers a link itself, connecting out through its NAT as
any client may. Without that, the pair would stay on UDP for good.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.netns.test_stream_links import iperf, links, received_bytes
from tests.support.mesh_lab import MESH_PORT, DaemonNode
from tests.support.nat_lab import Nat, SmallInternet, require_nat_lab
from tests.support.netns import NetnsLab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

TIMER_SCALE = 4
PATH_TIMEOUT = 40.0
LINK_TIMEOUT = 40.0


def bulk(client: DaemonNode, server: DaemonNode, seconds: int) -> int:
    """One iperf3 run client -> server's mesh IPv4; the bytes the server received."""
    return received_bytes(iperf(client, server, seconds))


def test_a_bulk_receiver_behind_nat_connects_the_link_out(tmp_path: Path) -> None:
    require_nat_lab()
    with NetnsLab() as netns:
        internet = SmallInternet(netns, tmp_path, settings={"timer_scale": TIMER_SCALE})
        hub = internet.add_public_node("hub")
        alpha = internet.add_node("alpha", Nat.MASQUERADE)
        hub.start()
        alpha.start([hub])
        wait_until(
            lambda: (
                (alpha.peer(hub) or {}).get("path") == "direct"
                and (hub.peer(alpha) or {}).get("path") == "direct"
            ),
            PATH_TIMEOUT,
            0.2,
            "hub and alpha to reach each other directly",
        )
        alpha.namespace.start(
            ["iperf3", "-s", "-B", alpha.ipv4],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: ":5201" in alpha.namespace.run(["ss", "-ltnH"]).stdout,
            10,
            what="iperf3 listening on alpha",
        )

        def linked() -> bool:
            assert bulk(hub, alpha, 2) > 1_000_000  # data flows, over UDP or the link
            return bool(links(hub)["up"] == 1 and links(alpha)["up"] == 1)

        try:
            wait_until(linked, LINK_TIMEOUT, 0.2, "a stream link between hub and alpha")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nhub: {links(hub)}\nalpha: {links(alpha)}\n{internet.diagnostics()}"
            ) from None
        # alpha made the connection: from its private address, out through its router.
        connections = alpha.namespace.run(
            ["ss", "-tnH", "state", "established", f"( dport = :{MESH_PORT} )"]
        ).stdout
        assert f"{hub.underlay}:{MESH_PORT}" in connections, connections
        assert links(alpha)["offers_sent"] >= 1
        assert bulk(hub, alpha, 2) > 1_000_000
        state = links(alpha)
        assert state["frames_received"] > 0 and state["frames_rejected"] == 0, state
        assert hub.running() and alpha.running(), internet.diagnostics()
