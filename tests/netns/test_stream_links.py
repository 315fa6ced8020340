"""Stream links between real daemons: bulk TCP takes one TCP connection per pair, UDP stays.

Two `gossipmesh up` daemons on a bridge; iperf3 between their mesh
addresses makes the TUN hand them TCP super-packets, which is what offers a
link (pings alone never do). The tests read `status --json` ("stream_links"),
`peers --json` ("stream_link") and the kernel's own view (`ss`) of the
link's TCP connection on port 51821, and break that connection on purpose:
killed mid-transfer and blocked with nftables, refused by a peer that runs
with `--no-stream-links`, and approached by a stranger with garbage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh_lab import (
    MESH_PORT,
    UNDERLAY_PREFIX,
    DaemonNode,
    MeshLab,
    ping_until,
    require_daemon_lab,
)
from tests.support.netns import Namespace, NetnsLab, unique_suffix, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

MIN_BULK_BYTES = 2_000_000
"""What a few seconds of iperf3 must move at least, over a link or over UDP (a loaded
2-core machine still moves far more)."""
LINK_TIMEOUT = 20.0
IPERF_PORT = 5201
TIMER_SCALE = 5
"""For the fallback test: the planner's 10 s backoff after a failure becomes 2 s."""


# --- helpers ---------------------------------------------------------------------------


def links(node: DaemonNode) -> dict[str, Any]:
    """The node's "stream_links" status object."""
    status: dict[str, Any] = node.status()["stream_links"]
    return status


def serve_iperf(node: DaemonNode) -> subprocess.Popen[str]:
    """An iperf3 server on the node's mesh IPv4 address (it serves client after client)."""
    server = node.namespace.start(
        ["iperf3", "-s", "-B", node.ipv4], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_until(
        lambda: f":{IPERF_PORT}" in node.namespace.run(["ss", "-ltnH"]).stdout,
        10,
        what=f"iperf3 listening on {node.name}",
    )
    return server


def iperf_command(server: DaemonNode, seconds: int) -> list[str]:
    return ["iperf3", "-c", server.ipv4, "-t", str(seconds), "-i", "1", "-J"]


def iperf(client: DaemonNode, server: DaemonNode, seconds: int) -> dict[str, Any]:
    """One iperf3 TCP run from client to server; its JSON report."""
    result = client.namespace.run(iperf_command(server, seconds), timeout=seconds + 30)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def received_bytes(report: dict[str, Any]) -> int:
    return int(report["end"]["sum_received"]["bytes"])


def link_connections(node: DaemonNode) -> list[str]:
    """ESTABLISHED TCP connections from or to the mesh port, in the node's namespace."""
    filter_ = f"( sport = :{MESH_PORT} or dport = :{MESH_PORT} )"
    lines = node.namespace.run(["ss", "-tnH", "state", "established", filter_]).stdout
    return [line for line in lines.splitlines() if line.strip()]


def wait_links(nodes: list[DaemonNode], condition: Callable[[dict[str, Any]], bool], what: str,
               timeout: float = LINK_TIMEOUT) -> list[dict[str, Any]]:  # fmt: skip
    """Until every node's "stream_links" satisfies `condition`; returns them."""

    def check() -> list[dict[str, Any]] | None:
        states = [links(node) for node in nodes]
        return states if all(condition(state) for state in states) else None

    try:
        result: list[dict[str, Any]] = wait_until(check, timeout, 0.2, what)
    except AssertionError as exc:
        states = {node.name: links(node) for node in nodes}
        logs = nodes[0].mesh.logs()
        raise AssertionError(f"{exc}\n{json.dumps(states, indent=1)}\n{logs}") from None
    return result


def link_up(state: dict[str, Any]) -> bool:
    return bool(state["up"] == 1)


def link_carried(state: dict[str, Any]) -> bool:
    return bool(state["up"] == 1 and state["frames_sent"] > 0)


def link_gone(state: dict[str, Any]) -> bool:
    """No link up, and the one that was is counted closed or failed."""
    return bool(state["up"] == 0 and state["links_failed"] + state["links_closed"] >= 1)


def two_nodes(netns: NetnsLab, tmp_path: Path, **settings: Any) -> tuple[DaemonNode, DaemonNode]:
    mesh = MeshLab(netns, tmp_path, settings=settings or None)
    alpha, bravo = mesh.add_nodes("alpha", "bravo")
    return alpha, bravo


def converge(alpha: DaemonNode, bravo: DaemonNode) -> None:
    alpha.mesh.wait_full_mesh()
    ping_until(alpha, bravo.ipv4)
    ping_until(bravo, alpha.ipv4)


def block_link_port(namespace: Namespace, *, silently: bool = False) -> Callable[[], None]:
    """An nftables table in `namespace` against TCP on the mesh port; returns its removal.

    By default it resets what arrives (both ends notice at once); `silently`
    drops both ways, as a middlebox that loses TCP state but passes UDP would.
    """
    table = f"gmtlinks{unique_suffix()}"
    verdict = "drop" if silently else "reject with tcp reset"
    output = f"    tcp sport {MESH_PORT} drop\n" if silently else ""
    rules = (
        f"table inet {table} {{\n"
        f"  chain input {{\n"
        f"    type filter hook input priority 0; policy accept;\n"
        f"    tcp dport {MESH_PORT} {verdict}\n"
        f"  }}\n"
        f"  chain output {{\n"
        f"    type filter hook output priority 0; policy accept;\n"
        f"{output}"
        f"  }}\n"
        f"}}\n"
    )
    namespace.run(["nft", "-f", "-"], input=rules)
    removed = False

    def remove() -> None:
        nonlocal removed
        if not removed:
            namespace.run(["nft", "delete", "table", "inet", table], check=False)
            removed = True

    namespace.lab.on_teardown(remove)
    return remove


# --- 1. a link comes up under bulk traffic -----------------------------------------------


def test_bulk_tcp_brings_up_one_link_that_carries_data_and_pings(tmp_path: Path) -> None:
    require_daemon_lab("ping", "iperf3", "ss")
    with NetnsLab() as netns:
        alpha, bravo = two_nodes(netns, tmp_path)
        alpha.mesh.start_all()
        converge(alpha, bravo)
        before = links(alpha)
        assert before["enabled"] and before["up"] == 0, before  # pings offer nothing
        assert before["offers_sent"] == 0, before

        serve_iperf(bravo)
        report = iperf(alpha, bravo, 3)
        assert received_bytes(report) > MIN_BULK_BYTES, report["end"]["sum_received"]

        state_a, state_b = wait_links([alpha, bravo], link_carried, "a link up on both nodes")
        assert state_a["frames_received"] > 0 and state_b["frames_received"] > 0
        assert state_a["frames_rejected"] == 0 and state_b["frames_rejected"] == 0
        assert state_a["links_opened"] == 1 and state_b["links_opened"] == 1
        assert state_a["links_failed"] == 0 and state_b["links_failed"] == 0
        assert state_a["offers_sent"] + state_b["offers_sent"] >= 1
        for node, other in ((alpha, bravo), (bravo, alpha)):
            row = node.peer(other)
            assert row is not None and row["stream_link"] is True, row
        # One TCP connection for the pair, seen from both ends.
        for node, other in ((alpha, bravo), (bravo, alpha)):
            connections = link_connections(node)
            assert len(connections) == 1, connections
            assert f"{other.underlay}:" in connections[0], connections

        # Pings (not bulk) ride the link too while it is up, both address families.
        sent_before, received_before = state_a["frames_sent"], state_b["frames_received"]
        for address in (bravo.ipv4, bravo.ipv6):
            alpha.ping(address, check=True)
        after_a, after_b = links(alpha), links(bravo)
        assert after_a["frames_sent"] >= sent_before + 2, after_a
        assert after_b["frames_received"] >= received_before + 2, after_b
        assert after_a["up"] == 1 and after_b["up"] == 1

        # IPv6 bulk: the TUN's TCPv6 super-packets cross the link whole too.
        bravo.namespace.start(
            ["iperf3", "-s", "-1", "-p", "5202", "-B", bravo.ipv6],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: ":5202" in bravo.namespace.run(["ss", "-ltnH"]).stdout,
            10,
            what="an IPv6 iperf3 server on bravo",
        )
        result = alpha.namespace.run(
            ["iperf3", "-c", bravo.ipv6, "-p", "5202", "-t", "2", "-J"], timeout=40
        )
        assert received_bytes(json.loads(result.stdout)) > MIN_BULK_BYTES
        after_v6 = links(bravo)
        assert after_v6["frames_received"] > after_b["frames_received"] + 100, after_v6
        assert after_v6["frames_rejected"] == 0 and after_v6["links_opened"] == 1, after_v6
        assert alpha.running() and bravo.running(), alpha.mesh.logs()


# --- 2. the link dies: UDP carries on, and a new link comes up later ---------------------


def test_killed_link_falls_back_to_udp_and_a_new_one_comes_up(tmp_path: Path) -> None:
    require_daemon_lab("ping", "iperf3", "ss", "nft")
    with NetnsLab() as netns:
        alpha, bravo = two_nodes(netns, tmp_path, timer_scale=TIMER_SCALE)
        alpha.mesh.start_all()
        converge(alpha, bravo)
        serve_iperf(bravo)

        # A 10 s transfer; the link comes up early in it and is killed while it runs.
        started = time.monotonic()
        transfer = alpha.namespace.start(iperf_command(bravo, 10))
        wait_links([alpha, bravo], link_up, "a link up under iperf3")
        # No new link while we look at UDP: either side may connect (the receiver of
        # bulk offers too, for NATs), so the port is refused in both namespaces.
        unblocks = [block_link_port(node.namespace) for node in (bravo, alpha)]
        bravo.namespace.run(
            ["ss", "-K", "state", "established", f"( sport = :{MESH_PORT} )"], check=True
        )
        killed_at = time.monotonic() - started
        assert killed_at < 6.0, f"the link was killed only {killed_at:.1f}s into the transfer"
        wait_links([alpha, bravo], link_gone, "both nodes to see the link go")
        assert link_connections(bravo) == []
        for node, other in ((alpha, bravo), (bravo, alpha)):
            row = node.peer(other)
            assert row is not None and row["stream_link"] is False, row

        out, err = transfer.communicate(timeout=40)
        assert transfer.returncode == 0, err
        report = json.loads(out)
        intervals = [interval["sum"]["bytes"] for interval in report["intervals"]]
        assert intervals and intervals[-1] > 0, intervals  # still moving after the kill
        assert received_bytes(report) > MIN_BULK_BYTES
        # UDP carries everything while TCP to the port is refused.
        ping_until(alpha, bravo.ipv4, timeout=10)
        ping_until(alpha, bravo.ipv6, timeout=10)
        assert received_bytes(iperf(alpha, bravo, 3)) > MIN_BULK_BYTES
        blocked_a, blocked_b = links(alpha), links(bravo)
        assert blocked_a["up"] == 0 and blocked_b["up"] == 0, (blocked_a, blocked_b)
        # The bulk traffic kept offering after the backoff, and the connects were refused
        # (the killed link counts once on each side).
        failed = blocked_a["links_failed"] + blocked_b["links_failed"]
        assert failed >= 3, (blocked_a, blocked_b)
        assert blocked_a["links_opened"] == 1 and blocked_b["links_opened"] == 1

        for unblock in unblocks:
            unblock()
        deadline = time.monotonic() + 60
        while links(alpha)["up"] == 0 or links(bravo)["up"] == 0:
            assert time.monotonic() < deadline, f"no new link within 60s\n{alpha.mesh.logs()}"
            iperf(alpha, bravo, 2)  # bulk traffic offers once the backoff has passed
        renewed_a, renewed_b = links(alpha), links(bravo)
        assert renewed_a["links_opened"] == 2 and renewed_b["links_opened"] == 2
        assert len(link_connections(bravo)) == 1
        assert received_bytes(iperf(alpha, bravo, 2)) > MIN_BULK_BYTES
        assert links(bravo)["frames_received"] > renewed_b["frames_received"]
        assert alpha.running() and bravo.running(), alpha.mesh.logs()


def test_silently_dead_link_gives_way_to_udp_within_seconds(tmp_path: Path) -> None:
    """TCP to the port vanishes without a reset while UDP passes.

    The pinging end's TCP_USER_TIMEOUT (5 s of unacknowledged data) closes
    its side; its packets then arrive over UDP, and the other end, which
    shares a link with it, takes that as the end of the link and closes its
    side at once (`links_abandoned`) instead of sending into the dead
    connection until its own timeout (before: ~30 s with no answered ping).
    """
    require_daemon_lab("ping", "iperf3", "ss", "nft")
    with NetnsLab() as netns:
        alpha, bravo = two_nodes(netns, tmp_path)
        alpha.mesh.start_all()
        converge(alpha, bravo)
        serve_iperf(bravo)
        iperf(alpha, bravo, 2)
        wait_links([alpha, bravo], link_up, "a link up after iperf3")
        block_link_port(bravo.namespace, silently=True)
        ping_until(alpha, bravo.ipv4, timeout=15)
        wait_links([alpha, bravo], lambda state: state["up"] == 0, "both sides to drop the link")
        state_a, state_b = links(alpha), links(bravo)
        assert state_a["links_failed"] >= 1 and state_b["links_failed"] >= 1, (state_a, state_b)
        assert state_a["links_abandoned"] + state_b["links_abandoned"] >= 1, (state_a, state_b)
        ping_until(alpha, bravo.ipv6, timeout=10)
        assert alpha.running() and bravo.running(), alpha.mesh.logs()


# --- 3. a peer with links off: UDP only, and no offer storm ------------------------------


def test_peer_without_stream_links_declines_once_and_traffic_stays_on_udp(tmp_path: Path) -> None:
    require_daemon_lab("ping", "iperf3", "ss")
    with NetnsLab() as netns:
        alpha, bravo = two_nodes(netns, tmp_path)
        alpha.start()
        bravo.start([alpha], "--no-stream-links")
        converge(alpha, bravo)
        assert not links(bravo)["enabled"]
        assert f":{MESH_PORT}" not in bravo.namespace.run(["ss", "-ltnH"]).stdout
        serve_iperf(bravo)

        assert received_bytes(iperf(alpha, bravo, 4)) > MIN_BULK_BYTES
        state_a, state_b = links(alpha), links(bravo)
        assert state_a["offers_answered"] >= 1, state_a  # the decline came back
        assert 1 <= state_a["offers_sent"] <= 2, state_a  # ... and stopped the offers
        assert state_a["up"] == 0 and state_b["up"] == 0
        assert state_a["frames_sent"] == 0 and state_b["frames_received"] == 0
        assert state_b["offers_sent"] == 0 and state_b["links_opened"] == 0
        assert link_connections(alpha) == [] and link_connections(bravo) == []
        assert alpha.peer(bravo)["stream_link"] is False  # type: ignore[index]

        # More bulk traffic later does not offer again (the decline backs off for long).
        assert received_bytes(iperf(alpha, bravo, 2)) > MIN_BULK_BYTES
        assert links(alpha)["offers_sent"] == state_a["offers_sent"]
        assert alpha.running() and bravo.running(), alpha.mesh.logs()


# --- 4. strangers at the TCP port ----------------------------------------------------------

STRANGER = r"""
import json, socket, sys, time
host, port, payload = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
wait, count = float(sys.argv[4]), int(sys.argv[5])
socks = []
for _ in range(count):
    s = socket.create_connection((host, port), timeout=5)
    if payload:
        s.sendall(payload)
    s.settimeout(0.05)
    socks.append(s)
start = time.monotonic()
closed = {}
while len(closed) < count and time.monotonic() - start < wait:
    for i, s in enumerate(socks):
        if i in closed:
            continue
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            data = b""
        if data:
            closed[i] = ("data", time.monotonic() - start)
        else:
            closed[i] = ("closed", time.monotonic() - start)
print(json.dumps({"closed": sorted(t for how, t in closed.values() if how == "closed"),
                  "data": sum(1 for how, _ in closed.values() if how == "data"),
                  "open": count - len(closed)}))
"""


def stranger(namespace: Namespace, target: DaemonNode, payload: bytes, wait: float,
             count: int = 1) -> dict[str, Any]:  # fmt: skip
    """Connect `count` times to the target's TCP mesh port, send `payload`, watch the closes."""
    argv = [sys.executable, "-c", STRANGER, target.underlay, str(MESH_PORT), payload.hex(),
            str(wait), str(count)]  # fmt: skip
    result: dict[str, Any] = json.loads(namespace.run(argv, timeout=wait + 20).stdout)
    return result


def test_strangers_at_the_link_port_are_closed_and_change_nothing(tmp_path: Path) -> None:
    require_daemon_lab("ping", "iperf3", "ss")
    with NetnsLab() as netns:
        alpha, bravo = two_nodes(netns, tmp_path)
        attacker = netns.namespace("bad")
        alpha.mesh.bridge.attach(attacker, f"{UNDERLAY_PREFIX}250/24")
        alpha.mesh.start_all()
        converge(alpha, bravo)

        garbage = bytes(range(24))
        wrong_token = b"GMLINK\x00\x01" + bytes(16)  # the right magic, a token never offered
        for payload in (garbage, wrong_token, garbage * 100):
            seen = stranger(attacker, bravo, payload, wait=4)
            assert len(seen["closed"]) == 1 and seen["data"] == 0, (payload[:24], seen)
            assert seen["closed"][0] < 3.0, seen  # at once, not at the preamble deadline
        silent = stranger(attacker, bravo, b"", wait=12)
        assert len(silent["closed"]) == 1, silent
        assert 4.0 <= silent["closed"][0] <= 10.0, silent  # the 5 s preamble deadline
        half = stranger(attacker, bravo, wrong_token[:10], wait=12)
        assert len(half["closed"]) == 1 and half["closed"][0] >= 4.0, half

        # A crowd of silent connections: beyond 32 waiting at once, the rest are refused.
        crowd = stranger(attacker, bravo, b"", wait=12, count=40)
        assert crowd["open"] == 0 and crowd["data"] == 0, crowd
        assert sum(1 for t in crowd["closed"] if t < 3.0) >= 8, crowd
        wait_until(
            lambda: not [c for c in link_connections(bravo) if UNDERLAY_PREFIX + "250" in c],
            10,
            what="the crowd's connections to be gone on bravo",
        )

        assert bravo.running(), alpha.mesh.logs()
        after = links(bravo)
        assert after["links_opened"] == 0 and after["frames_rejected"] == 0, after
        # Three bad preambles and the crowd's excess; a silent stranger times out instead.
        assert after["refused"] >= 3 + 8, after
        ping_until(alpha, bravo.ipv4, timeout=10)
        ping_until(alpha, bravo.ipv6, timeout=10)
        # The listener still takes a real link.
        serve_iperf(bravo)
        assert received_bytes(iperf(alpha, bravo, 3)) > MIN_BULK_BYTES
        wait_links([alpha, bravo], link_up, "a real link after strangers")
        assert alpha.running() and bravo.running(), alpha.mesh.logs()
