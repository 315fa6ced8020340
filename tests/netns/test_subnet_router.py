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
import time
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
            lambda: routed(client) == {LAN: "in use", ROGUE_LAN: "refused"},
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


def test_two_routers_for_one_subnet_fail_over(tmp_path: Path) -> None:
    require_daemon_lab("nft")
    with NetnsLab("gmsf") as netns:
        mesh = MeshLab(netns, tmp_path)
        authority = Authority(tmp_path / "authority")
        first, second, client = mesh.add_nodes("gw1", "gw2", "client")
        lan_switch = netns.bridge("lsw")
        host = netns.namespace("host")
        lan_switch.attach(host, f"{LAN_HOST}/24")
        lan_switch.attach(first.namespace, "10.77.0.1/24")
        lan_switch.attach(second.namespace, "10.77.0.3/24")
        certs = {
            node: authority.certify(node, ["gateway"], routes=[LAN]) for node in (first, second)
        }
        certs[client] = authority.certify(client, ["dev"])
        route = ("--advertise-routes", LAN, "--snat")
        first.start([], *authority.up_args(certs[first]), *route)
        second.start([first], *authority.up_args(certs[second]), *route)
        client.start([first], *authority.up_args(certs[client]))
        mesh.wait_full_mesh()
        client.cli("policy", "push", str(authority.sign_policy(POLICY, "failover")))
        wait_version([first, second, client], "policy", 1)

        def in_use() -> str | None:
            rows = [r for r in subnets(client) if r["prefix"] == LAN and r["status"] == "in use"]
            return rows[0]["router"] if rows else None

        wait_until(
            lambda: {r["router"] for r in subnets(client) if r["prefix"] == LAN} == {"gw1", "gw2"},
            CONVERGE_TIMEOUT,
            0.2,
            "both routers approved at the client",
        )
        ping_until(client, LAN_HOST)
        used = in_use()
        assert used in ("gw1", "gw2")
        dying = first if used == "gw1" else second
        dying.kill()  # a crash: no goodbye
        start = time.monotonic()
        ping_until(client, LAN_HOST, timeout=90.0)
        failover_s = time.monotonic() - start
        assert in_use() == ("gw2" if dying is first else "gw1")
        print(f"\nsubnet router failover: pings answered again {failover_s:.1f} s after the crash")
