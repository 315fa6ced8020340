"""Interop, for real: wireguard-go in one namespace, gossipmesh's wg_bridge in another.

Joined by a veth. Both directions of ping over IPv4 and IPv6, a handshake
initiated by each side, five seconds of iperf3 through the tunnel, and a rekey
seen while data flows (the bridge's timers run 30x faster through its
`timer_scale` setting; wireguard-go keeps the real ones). A non-zero preshared
key is used so the PSK slot is exercised too.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from gossipmesh.session.crypto import clamp, public_key
from tests.support.netns import Namespace, NetnsLab, require_netns, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(120)]

TIMER_SCALE = 30.0
"""REKEY_AFTER_TIME 120 s -> 4 s, so a rekey happens during the 5-second iperf3 run."""
UNDERLAY_WG, UNDERLAY_BRIDGE = "10.231.0.1", "10.231.0.2"
TUNNEL_WG4, TUNNEL_BRIDGE4 = "10.232.0.1", "10.232.0.2"
TUNNEL_WG6, TUNNEL_BRIDGE6 = "fd23:2::1", "fd23:2::2"
WG_PORT, BRIDGE_PORT = 51820, 51821


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class BridgeProcess:
    """The bridge running in a namespace; its JSON event lines are collected by a thread."""

    def __init__(self, namespace: Namespace, config: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.process = namespace.start(
            [sys.executable, "-m", "gossipmesh.runtime.wg_bridge", "--config", str(config)],
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(
            lambda: self.find(lambda e: e["event"] == "ready") or self._exited(),
            timeout=15,
            what="the bridge to start",
        )
        if self.process.poll() is not None:
            error = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"the bridge exited: {error}")

    def _exited(self) -> bool:
        return self.process.poll() is not None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(record)

    def find(self, match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.events if match(event)]

    def handshakes(self, initiator: bool | None = None) -> list[dict[str, Any]]:
        def match(event: dict[str, Any]) -> bool:
            if event["event"] != "handshake":
                return False
            return initiator is None or event["initiator"] == initiator

        return self.find(match)


def ping(namespace: Namespace, address: str) -> None:
    family = "-6" if ":" in address else "-4"
    namespace.run(["ping", family, "-c", "3", "-i", "0.2", "-W", "2", address], timeout=20)


def test_wireguard_go_interop(tmp_path: Path) -> None:
    require_netns("wireguard-go", "wg", "ping", "iperf3")
    with NetnsLab() as lab:
        wg_ns, bridge_ns = lab.namespace("wg"), lab.namespace("br")
        lab.veth(wg_ns, bridge_ns, f"{UNDERLAY_WG}/24", f"{UNDERLAY_BRIDGE}/24")

        wg_private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True)
        wg_private_b64 = wg_private.stdout.strip()
        wg_public = base64.b64decode(
            subprocess.run(
                ["wg", "pubkey"], input=wg_private_b64, capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        bridge_private = clamp(os.urandom(32))
        bridge_public = public_key(bridge_private)
        psk = os.urandom(32)

        key_file, psk_file = tmp_path / "wg.key", tmp_path / "wg.psk"
        for path, text in ((key_file, wg_private_b64), (psk_file, b64(psk))):
            path.write_text(text + "\n")
            path.chmod(0o600)

        # wireguard-go in the foreground, under a unique interface name; its UAPI
        # socket is machine-wide, so remove it at teardown as well.
        ifname = lab.name("wg")
        lab.remove_file_at_teardown(f"/var/run/wireguard/{ifname}.sock")
        wg_ns.start(["wireguard-go", "-f", ifname], env={"WG_PROCESS_FOREGROUND": "1"})
        wait_until(
            lambda: Path(f"/var/run/wireguard/{ifname}.sock").exists(),
            timeout=10,
            what="wireguard-go's UAPI socket",
        )
        wg_ns.run(
            ["wg", "set", ifname, "listen-port", str(WG_PORT), "private-key", str(key_file),
             "peer", b64(bridge_public), "preshared-key", str(psk_file),
             "endpoint", f"{UNDERLAY_BRIDGE}:{BRIDGE_PORT}",
             "allowed-ips", f"{TUNNEL_BRIDGE4}/32,{TUNNEL_BRIDGE6}/128"]
        )  # fmt: skip
        wg_ns.run(["ip", "addr", "add", f"{TUNNEL_WG4}/24", "dev", ifname])
        wg_ns.run(["ip", "-6", "addr", "add", f"{TUNNEL_WG6}/64", "dev", ifname, "nodad"])
        wg_ns.run(["ip", "link", "set", ifname, "mtu", "1420", "up"])

        config = tmp_path / "bridge.toml"
        config.write_text(
            f'private_key = "{b64(bridge_private)}"\n'
            f"listen_port = {BRIDGE_PORT}\n"
            f'interface = "{lab.name("br")}"\n'
            "mtu = 1420\n"
            f'addresses = ["{TUNNEL_BRIDGE4}/24", "{TUNNEL_BRIDGE6}/64"]\n'
            f"timer_scale = {TIMER_SCALE}\n"
            f'preshared_key = "{b64(psk)}"\n'
            "[[peer]]\n"
            f'public_key = "{b64(wg_public)}"\n'
            f'endpoint = "{UNDERLAY_WG}:{WG_PORT}"\n'
            f'allowed_ips = ["{TUNNEL_WG4}/32", "{TUNNEL_WG6}/128"]\n'
        )

        # 1. wireguard-go initiates.
        bridge = BridgeProcess(bridge_ns, config)
        ping(wg_ns, TUNNEL_BRIDGE4)
        assert bridge.handshakes(initiator=False), bridge.events
        ping(wg_ns, TUNNEL_BRIDGE6)
        ping(bridge_ns, TUNNEL_WG4)
        ping(bridge_ns, TUNNEL_WG6)

        # 2. The bridge initiates: a fresh process has no session.
        lab.stop_process(bridge.process)
        bridge = BridgeProcess(bridge_ns, config)
        ping(bridge_ns, TUNNEL_WG4)
        initiated = bridge.handshakes(initiator=True)
        assert initiated, bridge.events
        ping(bridge_ns, TUNNEL_WG6)
        ping(wg_ns, TUNNEL_BRIDGE6)

        # 3. Five seconds of TCP through the tunnel, bridge -> wireguard-go.
        server = wg_ns.start(["iperf3", "-s", "-1", "-B", TUNNEL_WG4])
        wait_until(
            lambda: "LISTEN" in wg_ns.run(["ss", "-ltn", "sport", "= :5201"]).stdout,
            timeout=10,
            what="iperf3 to listen",
        )
        before = len(bridge.handshakes())
        result = bridge_ns.run(
            ["iperf3", "-c", TUNNEL_WG4, "-t", "5", "-J", "-M", "1360"], timeout=40
        )
        server.wait(timeout=10)
        summary = json.loads(result.stdout)["end"]
        received = summary["sum_received"]
        print(
            f"\niperf3 bridge->wireguard-go: {received['bits_per_second'] / 1e6:.0f} Mbit/s, "
            f"{received['bytes'] / 1e6:.0f} MB in {received['seconds']:.1f} s, "
            f"retransmits {summary['sum_sent'].get('retransmits')}"
        )
        assert received["bytes"] > 1_000_000

        # 4. A rekey happened while data flowed (REKEY_AFTER_TIME is 4 s here),
        # and the tunnel still works after it.
        wait_until(
            lambda: len(bridge.handshakes()) > before,
            timeout=10,
            what="a rekey handshake",
        )
        indexes = {event["index"] for event in bridge.handshakes()}
        assert len(indexes) >= 2
        ping(bridge_ns, TUNNEL_WG4)
        latest = wg_ns.run(["wg", "show", ifname, "latest-handshakes"]).stdout.split()
        assert int(latest[1]) > 0

        lab.stop_process(bridge.process)
        stats = bridge.find(lambda e: e["event"] == "stats")
        assert stats, "the bridge reports its counters when stopped"
        session = stats[-1]["session"]
        print("bridge counters:", {k: v for k, v in session.items() if v})
        assert session["transport_authentication_failed"] == 0
        assert session["bad_mac1"] == 0
