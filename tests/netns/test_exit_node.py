"""Issue 18, exit nodes: a client's traffic to the outside leaves through an exit, masqueraded.

`exit` (certificate made with `cert sign --exit-node`) runs with
`--advertise-exit-node` and has a veth into an "outside" namespace whose
host (198.51.100.2, TEST-NET-2) has no route to anything else. `client`
runs with `--exit-node exit`: its namespace has no route to the outside at
all, yet a TCP connection to the outside host works, the host sees the
exit's address, the client's mesh sessions stay up; when the exit dies the
client's routing rules go back to what they were by themselves and return
with the exit; stopping the client leaves the rules exactly as they were.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns.test_trust_daemon import wait_version
from tests.support.mesh_lab import CONVERGE_TIMEOUT, MeshLab, ping_until, require_daemon_lab
from tests.support.netns import NetnsLab, wait_until
from tests.support.trust_lab import Authority, gossipmesh

pytestmark = pytest.mark.netns

OUTSIDE_HOST, OUTSIDE_EXIT = "198.51.100.2", "198.51.100.1"
PORT = 7007
POLICY = """\
version = 1

[[rules]]
from = ["group:dev"]
to = ["cidr:0.0.0.0/0"]
proto = "tcp"
ports = ["7007"]

[[rules]]
from = ["group:dev"]
to = ["*"]
proto = "icmp"
"""
WHO_AM_I = (
    "import socket\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(({OUTSIDE_HOST!r}, {PORT}))\n"
    "s.listen()\n"
    "while True:\n"
    "    c, peer = s.accept()\n"
    "    c.sendall(peer[0].encode())\n"
    "    c.close()\n"
)
ASK = (
    "import socket, sys\n"
    "try:\n"
    f"    c = socket.create_connection(({OUTSIDE_HOST!r}, {PORT}), timeout=3)\n"
    "    print(c.recv(100).decode())\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


def test_a_client_reaches_the_outside_through_its_exit_node(tmp_path: Path) -> None:
    require_daemon_lab("nft")
    with NetnsLab("gmex") as netns:
        mesh = MeshLab(netns, tmp_path)
        authority = Authority(tmp_path / "authority")
        exit_node, client = mesh.add_nodes("exit", "client")
        outside = netns.namespace("out")
        netns.veth(exit_node.namespace, outside, f"{OUTSIDE_EXIT}/24", f"{OUTSIDE_HOST}/24")
        exit_cert = authority.certify(exit_node, ["gateway"])  # makes its key
        exit_cert.unlink()
        gossipmesh(
            "cert", "sign", "--authority", str(authority.key), "--network", str(authority.network),
            "--key", str(exit_node.key), "--name", "exit", "--group", "gateway", "--exit-node",
            "--out", str(exit_cert),
        )  # fmt: skip
        client_cert = authority.certify(client, ["dev"])
        rules_before = client.namespace.run(["ip", "rule", "show"]).stdout
        server = outside.start(
            [sys.executable, "-c", WHO_AM_I], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        exit_node.start([], *authority.up_args(exit_cert), "--advertise-exit-node")
        client.start([exit_node], *authority.up_args(client_cert), "--exit-node", "exit")
        mesh.wait_full_mesh()
        client.cli("policy", "push", str(authority.sign_policy(POLICY, "exit")))
        wait_version([exit_node, client], "policy", 1)
        # The client's own tables know no way out: only the exit's table, through the TUN.
        assert "default" not in client.namespace.run(["ip", "route", "show"]).stdout
        lookup = client.namespace.run(["ip", "route", "get", OUTSIDE_HOST]).stdout
        assert f"dev {client.interface} table" in lookup

        def asked() -> str | None:
            result = client.namespace.run([sys.executable, "-c", ASK], check=False)
            return result.stdout.strip() if result.returncode == 0 else None

        seen_as = wait_until(asked, CONVERGE_TIMEOUT, 0.2, "the outside host through the exit")
        assert seen_as == OUTSIDE_EXIT  # masqueraded: the outside sees the exit
        ping_until(client, exit_node.ipv4)  # the mesh itself is unaffected
        assert exit_node.peer(client) is not None

        # The exit dies: the client's own routing comes back by itself (no rules left).
        exit_node.kill()
        wait_until(
            lambda: client.namespace.run(["ip", "rule", "show"]).stdout == rules_before,
            CONVERGE_TIMEOUT,
            0.2,
            "the client's own routing back after the exit died",
        )
        assert client.running()
        exit_node.start([client], *authority.up_args(exit_cert), "--advertise-exit-node")
        wait_until(asked, 2 * CONVERGE_TIMEOUT, 0.2, "the outside host through the restarted exit")

        client.terminate()  # turning it off leaves nothing behind
        assert client.namespace.run(["ip", "rule", "show"]).stdout == rules_before
        server.terminate()
