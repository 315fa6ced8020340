"""A mesh of real `gossipmesh up` daemons, one per network namespace, on one bridge.

Every node gets a namespace plugged into a bridge (itself in a namespace of
its own), an underlay address in 192.0.2.0/24 (TEST-NET-1, which exists only
on that bridge), a key, a state directory and a log under the test's
directory, and a unique TUN name. The `NetnsLab` underneath removes
namespaces and stops processes at teardown, also when the test fails; the
node files live in the caller's (pytest's) temporary directory.

    with NetnsLab() as netns:
        mesh = MeshLab(netns, tmp_path)
        a, b, c = mesh.add_nodes("alpha", "bravo", "charlie")
        mesh.start_all()                   # the first node bootstraps the others
        mesh.wait_full_mesh()              # every node knows every other one
        a.ping(c.ipv4)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import Bridge, Namespace, NetnsLab, require_netns, wait_until

GOSSIPMESH = str(Path(sys.executable).with_name("gossipmesh"))
"""The virtualenv's entry point: `ip netns exec` does not need PATH to find it."""
UNDERLAY_PREFIX = "192.0.2."
MESH_PORT = 51821
START_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 30.0


def require_daemon_lab(*tools: str) -> None:
    """Skip unless root, `ip`, `tools`, /dev/net/tun and the gossipmesh entry point exist."""
    require_netns(*tools)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun for the daemon's TUN device")
    if not os.access(GOSSIPMESH, os.X_OK):
        pytest.skip(f"needs the gossipmesh entry point at {GOSSIPMESH}")


def toml_config(settings: Mapping[str, Any]) -> str:
    """A TOML file for flat daemon settings (strings, numbers, lists of strings)."""
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars and lists are valid TOML
    return "\n".join(lines) + "\n"


class DaemonNode:
    """One `gossipmesh up` in its own namespace; its files live in `directory`."""

    def __init__(
        self, mesh: MeshLab, name: str, namespace: Namespace, underlay: str, directory: Path
    ) -> None:
        self.mesh = mesh
        self.name = name
        self.namespace = namespace
        self.underlay = underlay
        self.directory = directory
        self.interface = mesh.netns.name("gm")
        self.link: str | None = None
        """The namespace's end of its bridge link, when `MeshLab.add_node` made it."""
        self.process: subprocess.Popen[str] | None = None
        self.starts = 0
        self._status: dict[str, Any] | None = None

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def key(self) -> Path:
        return self.directory / "node.key"

    @property
    def log(self) -> Path:
        return self.directory / "daemon.log"

    @property
    def endpoint(self) -> str:
        return f"{self.underlay}:{MESH_PORT}"

    def up_command(self, bootstrap: Sequence[DaemonNode] = (), *extra: str) -> list[str]:
        argv = [
            GOSSIPMESH, "up", "--key", str(self.key), "--state-dir", str(self.state_dir),
            "--interface", self.interface, "--name", self.name, "--listen", str(MESH_PORT),
            "--network-secret", str(self.mesh.secret), "--dns", "off",
        ]  # fmt: skip
        if self.mesh.config is not None:
            argv += ["--config", str(self.mesh.config)]
        for node in bootstrap:
            argv += ["--bootstrap", node.endpoint]
        return [*argv, *extra]

    def start(self, bootstrap: Sequence[DaemonNode] = (), *extra: str, wait: bool = True) -> None:
        """Run the daemon, its output appended to `log`; wait until it answers `status`."""
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"--- start {self.starts}\n")
            log.flush()
            self.process = self.namespace.start(
                self.up_command(bootstrap, *extra), stdout=log, stderr=subprocess.STDOUT
            )
        self._status = None
        if wait:
            self.wait_ready()

    def wait_ready(self) -> dict[str, Any]:
        """Until `status --json` answers with `ready`; fails early if the daemon exits."""
        status: dict[str, Any] = wait_until(
            self._ready_status, START_TIMEOUT, 0.1, f"{self.name}'s daemon to answer status"
        )
        self._status = status  # addresses stay known after the daemon stops
        return status

    def _ready_status(self) -> dict[str, Any] | None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name}'s daemon exited early:\n{self.log.read_text()}")
        result = self.cli("status", "--json", check=False)
        if result.returncode != 0:
            return None
        status: dict[str, Any] = json.loads(result.stdout)
        # The control socket opens before the node has joined (and MagicDNS
        # serves); `ready` says both are done.
        return status if status.get("ready", True) else None

    @property
    def pid(self) -> int:
        """The daemon's own pid (the child of `ip netns exec`, which execs it)."""
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(
        self, *args: str, check: bool = True, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """`gossipmesh ARGS --state-dir ...` against this node's daemon."""
        return self.namespace.run(
            [GOSSIPMESH, *args, "--state-dir", str(self.state_dir)], check=check, timeout=timeout
        )

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.cli_json("status")
        self._status = status
        return status

    def peers(self) -> list[dict[str, Any]]:
        peers: list[dict[str, Any]] = self.cli_json("peers")
        return peers

    def peer(self, other: DaemonNode) -> dict[str, Any] | None:
        return next((row for row in self.peers() if row["name"] == other.name), None)

    @property
    def ipv4(self) -> str:
        return str((self._status or self.status())["ipv4"])

    @property
    def ipv6(self) -> str:
        return str((self._status or self.status())["ipv6"])

    def ping(self, address: str, *, check: bool = False) -> bool:
        """One kernel ping through the mesh; True if answered within 2 s."""
        argv = ["ping", "-6" if ":" in address else "-4", "-c", "1", "-W", "2", address]
        return self.namespace.run(argv, check=check).returncode == 0

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, as `systemctl stop` would; returns the exit status."""
        assert self.process is not None
        self.mesh.netns.stop_process(self.process, timeout=timeout)
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean anything up."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10.0)

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon process, from /proc/PID/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return ticks / os.sysconf("SC_CLK_TCK")


class MeshLab:
    """Daemon nodes on one bridge; everything goes when the `NetnsLab` closes."""

    def __init__(
        self,
        netns: NetnsLab,
        directory: Path,
        *,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.netns = netns
        self.directory = directory
        self._bridge: Bridge | None = None
        self.nodes: list[DaemonNode] = []
        self.secret = directory / "network.secret"
        self.secret.write_bytes(os.urandom(32).hex().encode())
        self.secret.chmod(0o600)
        self.config: Path | None = None
        if settings:
            self.config = directory / "gossipmesh.toml"
            self.config.write_text(toml_config(settings))

    @property
    def bridge(self) -> Bridge:
        """The switch every `add_node` namespace plugs into (created on first use)."""
        if self._bridge is None:
            self._bridge = self.netns.bridge()
        return self._bridge

    def add_node(self, name: str) -> DaemonNode:
        """A namespace on the bridge with the next underlay address; daemon not started."""
        namespace = self.netns.namespace(name[:4])
        underlay = f"{UNDERLAY_PREFIX}{len(self.nodes) + 1}"
        link = self.bridge.attach(namespace, f"{underlay}/24")
        node = self.adopt(name, namespace, underlay)
        node.link = link
        return node

    def adopt(self, name: str, namespace: Namespace, underlay: str) -> DaemonNode:
        """A node in a namespace the caller wired up itself (e.g. one end of a veth)."""
        directory = self.directory / name
        directory.mkdir()
        node = DaemonNode(self, name, namespace, underlay, directory)
        self.nodes.append(node)
        return node

    def add_nodes(self, *names: str) -> list[DaemonNode]:
        return [self.add_node(name) for name in names]

    def start_all(self) -> None:
        """Start every node: the first one alone, the rest bootstrapping from it."""
        first, *rest = self.nodes
        first.start()
        for node in rest:
            node.start([first], wait=False)
        for node in rest:
            node.wait_ready()

    def knows_everyone(self, node: DaemonNode) -> bool:
        others = {other.name for other in self.nodes if other is not node and other.running()}
        reachable = {row["name"] for row in node.peers() if row["path"] != "none"}
        return others <= reachable

    def wait_full_mesh(self, timeout: float = CONVERGE_TIMEOUT) -> None:
        """Until every running node has a path (direct or relayed) to every other one."""
        running = [node for node in self.nodes if node.running()]
        try:
            wait_until(
                lambda: all(self.knows_everyone(node) for node in running),
                timeout,
                0.2,
                "every node to reach every other one",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def describe(self) -> str:
        """Every node's peers table and log, for failure messages."""
        tables = []
        for node in self.nodes:
            if node.running():
                peers = node.cli("peers", check=False).stdout
                tables.append(f"=== {node.name} peers\n{peers}")
        return "\n".join(tables) + "\n" + self.logs()

    def logs(self) -> str:
        """Every node's log, for failure messages."""
        return "\n".join(
            f"=== {node.name}\n{node.log.read_text() if node.log.exists() else ''}"
            for node in self.nodes
        )


def ping_until(source: DaemonNode, address: str, timeout: float = CONVERGE_TIMEOUT) -> None:
    """Retry single pings until one is answered (the mesh converges) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not source.ping(address):
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{source.name} could not ping {address} within {timeout:.0f}s\n"
                f"{source.mesh.describe()}"
            )


def assert_full_size_packets_pass(source: DaemonNode, target: DaemonNode) -> None:
    """Pings of exactly the TUN MTU (1328), DF set, cross the path both ways, v4 and v6."""
    from gossipmesh.node.options import MESH_MTU

    for address, headers in ((target.ipv4, 28), (target.ipv6, 48)):
        source.namespace.run(
            ["ping", "-M", "do", "-c", "2", "-W", "2", "-s", str(MESH_MTU - headers), address]
        )
