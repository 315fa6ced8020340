"""A daemon's life cycle: crash and restart from its state, clean stop, one instance only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gossipmesh.errors import UsageError
from gossipmesh.runtime import daemon
from tests.support.mesh_lab import (
    GOSSIPMESH,
    UNDERLAY_PREFIX,
    MeshLab,
    ping_until,
    require_daemon_lab,
)
from tests.support.netns import NetnsLab, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def cached_peers(state_dir: Path) -> list[object]:
    """The peers in the daemon's peer cache (empty until it has saved one)."""
    try:
        peers: list[object] = json.loads((state_dir / "peers.json").read_text())["peers"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []
    return peers


def test_killed_node_restarts_with_its_addresses_and_rejoins_from_its_peer_cache(
    tmp_path: Path,
) -> None:
    require_daemon_lab("ping")
    with NetnsLab() as netns:
        mesh = MeshLab(netns, tmp_path)
        alpha, bravo, charlie = mesh.add_nodes("alpha", "bravo", "charlie")
        mesh.start_all()
        mesh.wait_full_mesh()
        before = charlie.status()
        ping_until(alpha, charlie.ipv4)
        wait_until(lambda: cached_peers(charlie.state_dir), 20, what="charlie's peer cache")

        charlie.kill()
        crashed = charlie.namespace.run(["ip", "link", "show", charlie.interface], check=False)
        assert crashed.returncode != 0, "the kernel removes the TUN device with its last fd"
        # A new underlay address: the others cannot find charlie where it was,
        # so only charlie's peer cache (no --bootstrap) can bring it back.
        assert charlie.link is not None
        charlie.namespace.run(["ip", "addr", "flush", "dev", charlie.link])
        charlie.underlay = f"{UNDERLAY_PREFIX}{len(mesh.nodes) + 10}"
        charlie.namespace.run(["ip", "addr", "add", f"{charlie.underlay}/24", "dev", charlie.link])
        charlie.start()
        assert "--bootstrap" not in charlie.up_command()
        after = charlie.status()
        assert (after["ipv4"], after["ipv6"]) == (before["ipv4"], before["ipv6"])
        ping_until(alpha, after["ipv4"])
        ping_until(bravo, after["ipv6"])
        ping_until(charlie, alpha.ipv4)

        tun, control_socket = charlie.interface, charlie.state_dir / "control.sock"
        assert charlie.namespace.run(["ip", "link", "show", tun], check=False).returncode == 0
        assert charlie.terminate() == 0
        ns = charlie.namespace
        assert ns.run(["ip", "link", "show", tun], check=False).returncode != 0, "TUN left behind"
        assert ns.run(["ip", "-4", "route", "show", "100.64.0.0/10"]).stdout.strip() == ""
        assert ns.run(["ip", "-6", "route", "show", "fd00::/8"]).stdout.strip() == ""
        assert not control_socket.exists(), "control socket left behind"


def test_second_up_on_the_same_state_dir_port_or_interface_is_refused_and_down_stops_it(
    tmp_path: Path,
) -> None:
    """The running daemon logs with --log-format json, checked at the end."""
    require_daemon_lab()
    with NetnsLab() as netns:
        mesh = MeshLab(netns, tmp_path)
        (alpha,) = mesh.add_nodes("alpha")
        alpha.start((), "--log-format", "json")

        same_state = alpha.namespace.run(
            [*alpha.up_command(), "--listen", "51999"], check=False, timeout=20
        )
        assert same_state.returncode == 2
        assert "already up" in same_state.stderr, same_state.stderr

        other_state = alpha.up_command()
        other_state[other_state.index("--state-dir") + 1] = str(tmp_path / "other-state")
        other_state[other_state.index("--interface") + 1] = netns.name("gm")
        same_port = alpha.namespace.run(other_state, check=False, timeout=20)
        assert same_port.returncode == 2
        assert "already in use" in same_port.stderr, same_port.stderr

        same_interface = alpha.up_command()
        same_interface[same_interface.index("--state-dir") + 1] = str(tmp_path / "third-state")
        same_interface[same_interface.index("--listen") + 1] = "51998"
        refused = alpha.namespace.run(same_interface, check=False, timeout=20)
        assert refused.returncode == 2
        assert f"TUN device '{alpha.interface}' is already in use" in refused.stderr, refused.stderr
        assert alpha.running()
        assert alpha.status()["ipv4"]
        assert (
            alpha.namespace.run(["ip", "link", "show", alpha.interface], check=False).returncode
            == 0
        )

        assert "stopping" in alpha.cli("down").stdout
        assert alpha.process is not None and alpha.process.wait(timeout=10) == 0
        gone = alpha.namespace.run(["ip", "link", "show", alpha.interface], check=False)
        assert gone.returncode != 0, "TUN left behind after down"
        no_daemon = alpha.cli("status", check=False)
        assert no_daemon.returncode != 0
        assert len(no_daemon.stderr.strip().splitlines()) == 1, no_daemon.stderr

        log_lines = alpha.log.read_text().splitlines()[1:]  # after the lab's "--- start" line
        entries = [json.loads(line) for line in log_lines]  # --log-format json: every line
        assert any(" up: " in f" {entry['message']}" for entry in entries), entries
        assert {"time", "level", "logger", "message"} <= set(entries[0]), entries[0]


def test_up_without_root_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="needs root"):
        daemon.preflight()


def test_up_as_an_unprivileged_user_is_one_line_and_exit_2(tmp_path: Path) -> None:
    require_daemon_lab("setpriv")
    tmp_path.chmod(0o755)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         GOSSIPMESH, "up", "--key", str(tmp_path / "node.key"),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        "gossipmesh: error: gossipmesh up needs root (CAP_NET_ADMIN) to create its TUN device"
    ]
    assert not (tmp_path / "state").exists() and not (tmp_path / "node.key").exists()
