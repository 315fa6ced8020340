"""A stock WireGuard device (wireguard-go) joins the mesh as a leaf of one node.

It is configured only from `gossipmesh wg-config`, connects to node A, and
pings node C, which it has no session with: A forwards for it, and C routes
the leaf's address back to A because A's signed record advertises it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.netns import Namespace, NetnsLab, require_netns, wait_until

pytestmark = pytest.mark.timeout(120)
GOSSIPMESH = str(Path(sys.executable).parent / "gossipmesh")


def _up(lab: NetnsLab, ns: Namespace, state: Path, *extra: str) -> None:
    state.mkdir(parents=True, exist_ok=True)
    log = (state.parent / f"{state.name}.log").open("w")
    lab.on_teardown(log.close)
    ns.start(
        [GOSSIPMESH, "up", "--key", str(state.parent / f"{state.name}.key"),
         "--state-dir", str(state), "--interface", lab.name("gm"), "--dns", "off", *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _status(ns: Namespace, state: Path) -> dict[str, object] | None:
    result = ns.run([GOSSIPMESH, "status", "--json", "--state-dir", str(state)], check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_wireguard_go_leaf_reaches_a_node_it_has_no_session_with(tmp_path: Path) -> None:
    require_netns("wireguard-go", "wg", "wg-quick", "ping", "iperf3", "ss")
    with NetnsLab() as lab:
        a, c, leaf = lab.namespace("a"), lab.namespace("c"), lab.namespace("leaf")
        lab.veth(a, c, "192.0.2.1/24", "192.0.2.3/24")
        lab.veth(leaf, a, "198.51.100.9/24", "198.51.100.1/24")
        secret = tmp_path / "network.secret"
        secret.write_bytes(os.urandom(32).hex().encode())
        secret.chmod(0o600)
        leaf_key = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True)
        (tmp_path / "leaf.key").write_text(leaf_key.stdout)
        leaf_public = subprocess.run(
            ["wg", "pubkey"], input=leaf_key.stdout, capture_output=True, text=True, check=True
        ).stdout.strip()
        config = tmp_path / "a.toml"
        config.write_text(f'[[leaf]]\nname = "phone"\npublic_key = "{leaf_public}"\n')

        _up(lab, a, tmp_path / "a", "--network-secret", str(secret), "--config", str(config))
        wait_until(lambda: _status(a, tmp_path / "a"), 20, what="node A up")
        _up(lab, c, tmp_path / "c", "--network-secret", str(secret),
            "--bootstrap", "192.0.2.1:51821")  # fmt: skip
        c_status = wait_until(lambda: _status(c, tmp_path / "c"), 20, what="node C up")

        wg_conf = a.run(
            [GOSSIPMESH, "wg-config", "phone", "--state-dir", str(tmp_path / "a"),
             "--private-key-file", str(tmp_path / "leaf.key"), "--endpoint", "198.51.100.1:51821"]
        ).stdout  # fmt: skip
        assert "Endpoint = 198.51.100.1:51821" in wg_conf and leaf_public not in wg_conf
        device = lab.name("wg")
        conf_path = tmp_path / f"{device}.conf"
        conf_path.write_text(wg_conf)
        lab.remove_file_at_teardown(f"/var/run/wireguard/{device}.sock")
        leaf.start(["wireguard-go", "-f", device], env={"WG_PROCESS_FOREGROUND": "1"})
        wait_until(
            lambda: leaf.run(["ip", "link", "show", device], check=False).returncode == 0,
            10,
            what="the wireguard-go device",
        )
        stripped = subprocess.run(
            ["wg-quick", "strip", str(conf_path)], capture_output=True, text=True, check=True
        ).stdout
        (tmp_path / "stripped.conf").write_text(stripped)
        leaf.run(["wg", "setconf", device, str(tmp_path / "stripped.conf")])
        address_line = next(line for line in wg_conf.splitlines() if line.startswith("Address"))
        for address in address_line.split("=", 1)[1].split(","):
            leaf.run(["ip", "addr", "add", address.strip(), "dev", device])
        leaf.run(["ip", "link", "set", device, "mtu", "1328", "up"])
        leaf.run(["ip", "route", "add", "100.64.0.0/10", "dev", device])
        leaf.run(["ip", "-6", "route", "add", "fd00::/8", "dev", device])

        assert c_status is not None
        for target in (str(c_status["ipv4"]), str(c_status["ipv6"])):
            wait_until(
                lambda t=target: (
                    leaf.run(["ping", "-c", "1", "-W", "1", t], check=False).returncode == 0
                ),
                30,
                what=f"the leaf pinging node C at {target}",
            )
        handshake = leaf.run(["wg", "show", device, "latest-handshakes"]).stdout.split()
        assert int(handshake[1]) > 0

        # Bulk TCP from C to the leaf: C sends it over a stream link to A (the node
        # that routes the leaf's prefix), A cuts it into plain WireGuard for the leaf.
        leaf_ipv4 = next(
            a.strip().split("/")[0] for a in address_line.split("=", 1)[1].split(",") if "." in a
        )
        leaf.start(
            ["iperf3", "-s", "-B", leaf_ipv4], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(
            lambda: ":5201" in leaf.run(["ss", "-ltnH"]).stdout, 10, what="iperf3 on the leaf"
        )

        def link_carried_to_leaf() -> bool:
            result = c.run(["iperf3", "-c", leaf_ipv4, "-t", "2", "-J"], timeout=40)
            assert json.loads(result.stdout)["end"]["sum_received"]["bytes"] > 1_000_000
            a_links = (_status(a, tmp_path / "a") or {})["stream_links"]
            return bool(a_links["up"] == 1 and a_links["frames_received"] > 100)  # type: ignore[index]

        wait_until(link_carried_to_leaf, 40, what="C's bulk to the leaf to take a link to A")
        a_links = (_status(a, tmp_path / "a") or {})["stream_links"]
        assert a_links["frames_rejected"] == 0, a_links  # type: ignore[index]
