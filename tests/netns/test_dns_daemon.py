"""MagicDNS through the real daemon, in network namespaces (tests/support/mesh_lab.py).

A node with `--dns resolv-conf` edits `/etc/resolv.conf` as seen from its
namespace, which `ip netns exec` bind-mounts from `/etc/netns/NS/resolv.conf`:
that file is created (and checked to be what the namespace sees) *before*
such a daemon starts, so the host's own resolv.conf is never the one edited.
The helpers here are shared with test_ssh_over_mesh.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh_lab import (
    CONVERGE_TIMEOUT,
    START_TIMEOUT,
    DaemonNode,
    MeshLab,
    require_daemon_lab,
)
from tests.support.netns import Namespace, NetnsLab, wait_until

pytestmark = pytest.mark.netns

RESOLVER = "100.100.100.100"
UPSTREAM_CONF = "search example.test\nnameserver 192.0.2.53\noptions ndots:1 timeout:2\n"
"""A namespace resolv.conf with a dummy upstream (nothing listens at 192.0.2.53)."""


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


def start_up(node: DaemonNode, bootstrap: list[DaemonNode], dns: str) -> None:
    """Start `node` with `--dns dns` and wait for its last start-up line.

    `status` answers before MagicDNS is up; "up:" is logged after it (and
    after any crash recovery), so resolv.conf and the resolver are ready.
    """
    node.start(bootstrap, "--dns", dns)
    wait_until(
        lambda: " up: " in this_run_log(node),
        START_TIMEOUT,
        0.1,
        f"{node.name} to log that it is up",
    )


def this_run_log(node: DaemonNode) -> str:
    """The daemon's log since its latest start."""
    return node.log.read_text().split(f"--- start {node.starts}\n")[-1]


def server_and_client(netns: NetnsLab, tmp_path: Path) -> tuple[MeshLab, DaemonNode, DaemonNode]:
    """`server` (--dns off) and `client` (--dns resolv-conf, its own resolv.conf), started.

    The mesh itself may still be converging when this returns.
    """
    mesh = MeshLab(netns, tmp_path)
    server, client = mesh.add_nodes("server", "client")
    namespace_resolv_conf(netns, client.namespace, UPSTREAM_CONF)
    start_up(server, [], "off")
    start_up(client, [server], "resolv-conf")
    return mesh, server, client


def resolve(node: DaemonNode, name: str) -> dict[str, Any]:
    """`gossipmesh resolve NAME --json`, answered by the node's daemon."""
    answer: dict[str, Any] = json.loads(node.cli("resolve", name, "--json").stdout)
    return answer


def wait_resolved(mesh: MeshLab, client: DaemonNode, name: str) -> dict[str, Any]:
    """The client's daemon knows `name`: from its records, else the DHT."""

    def found() -> dict[str, Any] | None:
        answer = resolve(client, name)
        return answer if answer.get("found") else None

    try:
        answer: dict[str, Any] = wait_until(found, CONVERGE_TIMEOUT, 0.2, f"{name} to resolve")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{mesh.describe()}") from None
    return answer


def dig(node: DaemonNode, *args: str, server: str = RESOLVER) -> str:
    return node.namespace.run(["dig", f"@{server}", "+time=2", "+tries=1", *args]).stdout


def dig_status(output: str) -> str:
    for line in output.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    raise AssertionError(f"no status in dig output:\n{output}")


def route_source(node: DaemonNode, destination: str) -> str:
    """The source address the kernel picks for a packet from `node` to `destination`."""
    route = node.namespace.run(["ip", "route", "get", destination]).stdout.split()
    return route[route.index("src") + 1]


# -- tests --------------------------------------------------------------------


def test_daemon_answers_mesh_names_reverse_and_nxdomain(tmp_path: Path) -> None:
    require_daemon_lab("dig")
    with NetnsLab("gmd") as netns:
        mesh, server, client = server_and_client(netns, tmp_path)
        answer = wait_resolved(mesh, client, "server.mesh")
        assert (answer["ipv4"], answer["ipv6"]) == (server.ipv4, server.ipv6)
        assert answer["fqdn"] == "server.mesh."

        assert dig(client, "+short", "server.mesh", "A").split() == [server.ipv4]
        assert dig(client, "+short", "SERVER.mesh", "AAAA").split() == [server.ipv6]
        nxdomain = dig(client, "nosuch.mesh", "A")
        assert dig_status(nxdomain) == "NXDOMAIN"
        assert "SOA" in nxdomain.split("AUTHORITY SECTION")[1]
        assert dig(client, "+short", "-x", server.ipv4).split() == ["server.mesh."]
        assert dig(client, "+short", "-x", server.ipv6).split() == ["server.mesh."]
        assert dig_status(dig(client, "server.mesh", "MX")) == "NOERROR"  # NODATA
        assert dig(client, "+short", "+tcp", "server.mesh", "A").split() == [server.ipv4]
        assert dig(client, "+short", "server.mesh", "AAAA", server="fd00::53").split() == [
            server.ipv6
        ]

        # The resolver's addresses are never a source: packets to peers leave from ours.
        assert route_source(client, server.ipv6) == client.ipv6
        assert route_source(client, "fd00::1") == client.ipv6  # closest to fd00::53
        assert route_source(client, server.ipv4) == client.ipv4

        # glibc in the namespace goes through the edited resolv.conf.
        hosts = client.namespace.run(["getent", "ahostsv4", "server.mesh"]).stdout
        assert hosts.split()[0] == server.ipv4


def test_resolv_conf_restored_after_stop_and_after_a_crash(tmp_path: Path) -> None:
    require_daemon_lab()
    host_resolv_conf = _snapshot(Path("/etc/resolv.conf"))
    with NetnsLab("gmr") as netns:
        node = MeshLab(netns, tmp_path).add_node("solo")
        resolv_conf = namespace_resolv_conf(netns, node.namespace, UPSTREAM_CONF)
        original = _snapshot(resolv_conf)
        backup = node.state_dir / "resolv.conf.gossipmesh-backup"

        start_up(node, [], "resolv-conf")
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

        start_up(node, [], "resolv-conf")
        node.kill()
        assert resolv_conf.read_text() == managed, "nothing can restore after SIGKILL"
        assert backup.exists()

        start_up(node, [], "resolv-conf")  # recovers from the backup, then edits again
        assert resolv_conf.read_text() == managed
        log = this_run_log(node)
        assert "left by an earlier run (restored)" in log, log
        assert "forwarding to 192.0.2.53" in log, log  # upstreams from the original, not us
        assert node.terminate() == 0
        assert _snapshot(resolv_conf) == original
        assert not backup.exists()

        start_up(node, [], "resolv-conf")
        node.kill()
        start_up(node, [], "off")  # leaves the host alone, but undoes our crashed edit
        assert _snapshot(resolv_conf) == original
        assert not backup.exists()
        assert node.terminate() == 0
        assert _snapshot(resolv_conf) == original
    assert _snapshot(Path("/etc/resolv.conf")) == host_resolv_conf


def _snapshot(path: Path) -> tuple[bytes, int, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mode, info.st_uid, info.st_gid
