"""Three real daemons on a bridge form one IPv4 and IPv6 network.

Each node is `gossipmesh up` in its own namespace; the kernel's ping and
iperf3 run over the TUN devices, so the whole data path is exercised: TUN
read, session encryption, UDP, decryption, TUN write.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from gossipmesh.node.options import MESH_MTU
from tests.support.mesh_lab import (
    MeshLab,
    assert_full_size_packets_pass,
    ping_until,
    require_daemon_lab,
)
from tests.support.netns import NetnsLab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def test_every_pair_pings_over_ipv4_and_ipv6_and_tcp_passes_data(tmp_path: Path) -> None:
    require_daemon_lab("ping", "iperf3")
    with NetnsLab() as netns:
        mesh = MeshLab(netns, tmp_path)
        nodes = mesh.add_nodes("alpha", "bravo", "charlie")
        mesh.start_all()
        mesh.wait_full_mesh()
        for source, target in itertools.permutations(nodes, 2):
            ping_until(source, target.ipv4)
            ping_until(source, target.ipv6)

        alpha, _, charlie = nodes
        assert_full_size_packets_pass(alpha, charlie)
        too_big = alpha.namespace.run(
            ["ping", "-M", "do", "-c", "1", "-W", "2", "-s", str(MESH_MTU - 28 + 1), charlie.ipv4],
            check=False,
        )
        assert too_big.returncode != 0 and f"mtu={MESH_MTU}" in too_big.stdout + too_big.stderr
        held = {node.ipv4 for node in nodes}
        nobody = next(f"100.64.0.{i}" for i in range(1, 10) if f"100.64.0.{i}" not in held)
        for address in (nobody, "fd12:3456::1"):  # mesh addresses no node holds
            answer = alpha.namespace.run(["ping", "-c", "1", "-W", "2", address], check=False)
            assert "unreachable" in answer.stdout.lower(), answer.stdout  # not a silent drop
        server = charlie.namespace.start(["iperf3", "-s", "-1", "-B", charlie.ipv4])
        wait_until(
            lambda: charlie.namespace.run(["ss", "-ltn", "sport", "= :5201"]).stdout.count("5201"),
            10,
            what="iperf3 listening on charlie",
        )
        result = alpha.namespace.run(
            ["iperf3", "-c", charlie.ipv4, "-t", "5", "-J"], timeout=30
        ).stdout
        received = json.loads(result)["end"]["sum_received"]["bytes"]
        assert received > 0
        server.wait(timeout=10)
        assert alpha.peer(charlie) is not None
        assert all(node.running() for node in nodes), mesh.logs()
