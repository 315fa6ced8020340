"""MagicDNS through the real daemon, in network namespaces.

Each node is `gossipmesh up` in its own namespace, joined to the others by a
veth pair. A node with `--dns resolv-conf` edits `/etc/resolv.conf` as seen
from its namespace, which `ip netns exec` bind-mounts from
`/etc/netns/NS/resolv.conf`: that file is created (and checked to be what
the namespace sees) *before* such a daemon starts, so the host's own
resolv.conf is never the one edited. The helpers here are shared with
test_ssh_over_mesh.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import Namespace, NetnsLab, require_netns, wait_until

pytestmark = pytest.mark.netns

GOSSIPMESH = str(Path(sys.executable).with_name("gossipmesh"))
"""The virtualenv's entry point: `ip netns exec` does not need PATH to find it."""
RESOLVER = "100.100.100.100"
UNDERLAY_PREFIX = "192.0.2."
"""TEST-NET-1: underlay addresses that exist only on the test's veth links."""
MESH_PORT = 51821
START_TIMEOUT = 20.0
MESH_TIMEOUT = 30.0


def require_daemon_lab(*tools: str) -> None:
    """Skip unless root, `ip`, `tools`, a TUN device and the gossipmesh entry point exist."""
    require_netns(*tools)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun for the daemon's TUN device")
    if not os.access(GOSSIPMESH, os.X_OK):
        pytest.skip(f"needs the gossipmesh entry point at {GOSSIPMESH}")


def namespace_resolv_conf(lab: NetnsLab, namespace: Namespace, content: str) -> Path:
    """Give `namespace` its own resolv.conf, and prove it is the one the namespace sees.

    Without /etc/netns/NS/resolv.conf a daemon run with `--dns resolv-conf`
    would edit the host's /etc/resolv.conf; the check makes that impossible.
    """
    directory = Path("/etc/netns") / namespace.name
    directory.mkdir(parents=True)
    lab.on_teardown(lambda: shutil.rmtree(directory, ignore_errors=True))
    path = directory / "resolv.conf"
    path.write_text(content)
    path.chmod(0o644)
    seen = namespace.run(["cat", "/etc/resolv.conf"]).stdout
    if seen != content:
        raise AssertionError(f"{namespace.name} does not see {path} as /etc/resolv.conf: {seen!r}")
    return path


@dataclass
class MeshNode:
    """One `gossipmesh up` in its own namespace; its files live in `directory`."""

    lab: NetnsLab
    namespace: Namespace
    name: str
    underlay: str
    directory: Path
    up_args: list[str]
    process: subprocess.Popen[str] | None = None
    starts: int = 0

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def log(self) -> Path:
        return self.directory / "daemon.log"

    def start(self) -> None:
        """Run the daemon (its output appended to `log`) and wait for its control socket."""
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"--- start {self.starts}\n")
            log.flush()
            self.process = self.namespace.start(
                [GOSSIPMESH, "up", "--key", str(self.directory / "node.key"),
                 "--state-dir", str(self.state_dir), "--name", self.name,
                 "--listen", str(MESH_PORT), *self.up_args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._answers_status, START_TIMEOUT, 0.1, f"{self.name}'s daemon to start")

    def _answers_status(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name}'s daemon exited early:\n{self.log.read_text()}")
        return self.cli("status", "--json", check=False).returncode == 0

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`gossipmesh ARGS --state-dir ...` against this node's daemon."""
        return self.namespace.run(
            [GOSSIPMESH, *args, "--state-dir", str(self.state_dir)], check=check
        )

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cli("status", "--json").stdout)
        return result

    def resolve(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cli("resolve", name, "--json").stdout)
        return result

    def terminate(self) -> int:
        """SIGTERM, as `systemctl stop` would; returns the exit status."""
        assert self.process is not None
        self.lab.stop_process(self.process, timeout=10.0)
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to restore anything."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10.0)

    def diagnostics(self) -> str:
        """What this node knows and logged, for a failure message."""
        peers = self.cli("peers", "--json", check=False)
        return f"{self.name} peers: {peers.stdout}{peers.stderr}\n{self.log.read_text()}"

    def dig(self, *args: str) -> str:
        return self.namespace.run(["dig", f"@{RESOLVER}", "+time=2", "+tries=1", *args]).stdout


def mesh_node(lab: NetnsLab, tmp_path: Path, name: str, index: int, up_args: list[str]) -> MeshNode:
    """A namespace for node `name` (not yet linked, daemon not started)."""
    directory = tmp_path / name
    directory.mkdir()
    return MeshNode(
        lab, lab.namespace(name[:4]), name, f"{UNDERLAY_PREFIX}{index}", directory, up_args
    )


def network_secret(tmp_path: Path) -> Path:
    path = tmp_path / "network.secret"
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o600)
    return path


def two_node_mesh(
    lab: NetnsLab, tmp_path: Path, *, client_dns: str, resolv_conf: str
) -> tuple[MeshNode, MeshNode]:
    """`server` (no host DNS) and `client` (its namespace resolver per `client_dns`), joined.

    Returns once both daemons answer on their control sockets; the mesh
    itself may still be converging.
    """
    secret = network_secret(tmp_path)
    common = ["--network-secret", str(secret), "--interface", "gm0"]
    server = mesh_node(lab, tmp_path, "server", 1, [*common, "--dns", "off"])
    bootstrap = f"{server.underlay}:{MESH_PORT}"
    client = mesh_node(
        lab, tmp_path, "client", 2, [*common, "--dns", client_dns, "--bootstrap", bootstrap]
    )
    lab.veth(server.namespace, client.namespace, f"{server.underlay}/24", f"{client.underlay}/24")
    namespace_resolv_conf(lab, client.namespace, resolv_conf)
    server.start()
    client.start()
    return server, client


def wait_resolved(client: MeshNode, name: str) -> dict[str, Any]:
    """The client's daemon knows `name`: from its records, else the DHT."""

    def found() -> dict[str, Any] | None:
        result = client.resolve(name)
        return result if result.get("found") else None

    try:
        answer: dict[str, Any] = wait_until(found, MESH_TIMEOUT, 0.2, f"{name} to resolve")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{client.diagnostics()}") from None
    return answer


def answer_ipv6(node: MeshNode) -> str:
    return str(node.status()["ipv6"])


def dig_status(output: str) -> str:
    for line in output.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    raise AssertionError(f"no status in dig output:\n{output}")


# -- tests --------------------------------------------------------------------

UPSTREAM_CONF = "search example.test\nnameserver 192.0.2.53\noptions ndots:1 timeout:2\n"
"""A namespace resolv.conf with a dummy upstream (nothing listens at 192.0.2.53)."""


def test_daemon_answers_mesh_names_reverse_and_nxdomain(tmp_path: Path) -> None:
    require_daemon_lab("dig")
    with NetnsLab("gmd") as lab:
        server, client = two_node_mesh(
            lab, tmp_path, client_dns="resolv-conf", resolv_conf=UPSTREAM_CONF
        )
        expected = server.status()
        answer = wait_resolved(client, "server.mesh")
        assert (answer["ipv4"], answer["ipv6"]) == (expected["ipv4"], expected["ipv6"])
        assert answer["fqdn"].rstrip(".") == "server.mesh"

        assert client.dig("+short", "server.mesh", "A").split() == [expected["ipv4"]]
        assert client.dig("+short", "SERVER.mesh", "AAAA").split() == [expected["ipv6"]]
        nxdomain = client.dig("nosuch.mesh", "A")
        assert dig_status(nxdomain) == "NXDOMAIN"
        assert "SOA" in nxdomain.split("AUTHORITY SECTION")[1]
        assert client.dig("+short", "-x", expected["ipv4"]).split() == ["server.mesh."]
        assert client.dig("+short", "-x", expected["ipv6"]).split() == ["server.mesh."]
        assert dig_status(client.dig("server.mesh", "MX")) == "NOERROR"  # NODATA
        assert client.dig("+short", "+tcp", "server.mesh", "A").split() == [expected["ipv4"]]
        over_ipv6 = client.namespace.run(["dig", "@fd00::53", "+short", "server.mesh", "AAAA"])
        assert over_ipv6.stdout.split() == [expected["ipv6"]]

        # The resolver's addresses are never a source: packets to peers leave from ours.
        for destination in (expected["ipv6"], "fd00::1"):
            route = client.namespace.run(["ip", "route", "get", destination]).stdout.split()
            assert route[route.index("src") + 1] == answer_ipv6(client), route
        route = client.namespace.run(["ip", "route", "get", expected["ipv4"]]).stdout.split()
        assert route[route.index("src") + 1] != RESOLVER, route

        # glibc in the namespace goes through the edited resolv.conf.
        hosts = client.namespace.run(["getent", "ahostsv4", "server.mesh"]).stdout
        assert hosts.split()[0] == expected["ipv4"]


def test_resolv_conf_restored_after_stop_and_after_a_crash(tmp_path: Path) -> None:
    require_daemon_lab()
    host_resolv_conf = _snapshot(Path("/etc/resolv.conf"))
    with NetnsLab("gmr") as lab:
        node = mesh_node(lab, tmp_path, "solo", 1, ["--interface", "gm0", "--dns", "resolv-conf"])
        resolv_conf = namespace_resolv_conf(lab, node.namespace, UPSTREAM_CONF)
        original = _snapshot(resolv_conf)
        backup = node.state_dir / "resolv.conf.gossipmesh-backup"

        node.start()
        managed = resolv_conf.read_text()
        assert managed.splitlines()[1:] == [
            f"nameserver {RESOLVER}",
            "nameserver fd00::53",
            "search example.test",
            "options ndots:1 timeout:2",
        ]
        assert node.terminate() == 0
        assert _snapshot(resolv_conf) == original
        assert not backup.exists()

        node.start()
        assert resolv_conf.read_text() == managed
        node.kill()
        assert resolv_conf.read_text() == managed, "nothing can restore after SIGKILL"
        assert backup.exists()

        node.start()  # recovers from the backup, then edits again
        assert resolv_conf.read_text() == managed
        log = node.log.read_text().split("--- start 3\n")[1]
        assert "forwarding to 192.0.2.53" in log, log  # upstreams from the backup, not us
        assert node.terminate() == 0
        assert _snapshot(resolv_conf) == original
        assert not backup.exists()

        node.start()
        node.kill()
        node.up_args = ["--interface", "gm0", "--dns", "off"]
        node.start()  # --dns off leaves the host alone, but undoes our crashed edit
        assert _snapshot(resolv_conf) == original
        assert not backup.exists()
        assert node.terminate() == 0
        assert _snapshot(resolv_conf) == original
    assert _snapshot(Path("/etc/resolv.conf")) == host_resolv_conf


def _snapshot(path: Path) -> tuple[bytes, int, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mode, info.st_uid, info.st_gid
