"""Issue 18, subnet routers: a plain LAN host reached through a node, as the certificate allows.

A LAN namespace holds a host with no gossipmesh (10.77.0.2) behind `router`,
whose certificate grants 10.77.0.0/24 and which runs with
`--advertise-routes 10.77.0.0/24 --snat`. `client` (group dev) reaches the
host by its LAN address with the kernel's ping and a real TCP connect; the
policy lets dev, not db, into the subnet, so `other` (group db) cannot.
`rogue` advertises 10.78.0.0/24 without a certificate granting it: every
node lists it as refused and installs no route for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns.test_trust_daemon import tcp_connects, wait_version
from tests.support.mesh_lab import CONVERGE_TIMEOUT, MeshLab, ping_until, require_daemon_lab
from tests.support.netns import NetnsLab, wait_until
from tests.support.trust_lab import Authority

pytestmark = pytest.mark.netns

LAN, LAN_HOST, LAN_ROUTER = "10.77.0.0/24", "10.77.0.2", "10.77.0.1"
ROGUE_LAN = "10.78.0.0/24"
POLICY = """\
version = 1

[[rules]]
from = ["group:dev"]
to = ["cidr:10.77.0.0/24"]
proto = "icmp"

[[rules]]
from = ["group:dev"]
to = ["cidr:10.77.0.0/24"]
proto = "tcp"
ports = ["80"]
"""


def subnets(node: object) -> list[dict[str, str]]:
    status = json.loads(node.cli("status", "--json").stdout)  # type: ignore[attr-defined]
    return list(status["subnets"])


def test_a_lan_host_is_reached_through_its_subnet_router(tmp_path: Path) -> None:
    require_daemon_lab("nft")
    with NetnsLab("gmsr") as netns:
        mesh = MeshLab(netns, tmp_path)
        authority = Authority(tmp_path / "authority")
        router, client, other, rogue = mesh.add_nodes("router", "client", "other", "rogue")
        lan = netns.namespace("lan")
        netns.veth(router.namespace, lan, f"{LAN_ROUTER}/24", f"{LAN_HOST}/24")
        certs = {
            router: authority.certify(router, ["gateway"], routes=[LAN]),
            client: authority.certify(client, ["dev"]),
            other: authority.certify(other, ["db"]),
            rogue: authority.certify(rogue, ["dev"]),
        }
        router.start([], *authority.up_args(certs[router]), "--advertise-routes", LAN, "--snat")
        for node, extra in ((client, []), (other, []), (rogue, ["--advertise-routes", ROGUE_LAN])):
            node.start([router], *authority.up_args(certs[node]), *extra, wait=False)
        for node in (client, other, rogue):
            node.wait_ready()
        mesh.wait_full_mesh()
        signed = authority.sign_policy(POLICY, "subnets")
        client.cli("policy", "push", str(signed))
        wait_version([router, client, other, rogue], "policy", 1)

        def routed(node: object) -> dict[str, str]:
            return {row["prefix"]: row["status"] for row in subnets(node)}

        wait_until(
            lambda: routed(client) == {LAN: "approved", ROGUE_LAN: "refused"},
            CONVERGE_TIMEOUT,
            0.2,
            "client to approve the router's subnet and refuse rogue's",
        )
        assert routed(router).get(LAN) == "advertised"
        kernel = client.namespace.run(["ip", "route", "show"]).stdout
        assert f"{LAN} dev {client.interface}" in kernel
        assert ROGUE_LAN not in kernel

        web = lan.start(
            [sys.executable, "-m", "http.server", "80", "--bind", LAN_HOST],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The LAN host has no route to the mesh at all: its answers come back only because
        # the router masquerades (--snat).
        assert "100.64" not in lan.run(["ip", "route", "show"]).stdout
        ping_until(client, LAN_HOST)  # the kernel's ping, through the router, to a plain host
        wait_until(lambda: tcp_connects(client, LAN_HOST, 80), CONVERGE_TIMEOUT, 0.2, "TCP")
        assert not other.ping(LAN_HOST)  # db: the policy at the router says no
        assert not tcp_connects(other, LAN_HOST, 80)
        dropped = json.loads(router.cli("status", "--json").stdout)["counters"]
        assert dropped.get("policy_dropped_no_rule", 0) > 0
        web.terminate()
