"""Reference VPNs for benchmarks/throughput: fastd, tinc, nebula and yggdrasil.

Each launcher brings up one tunnel between namespaces `a` (underlay
192.0.2.1) and `b` (192.0.2.2), waits until `a` can ping `b` through it,
and returns the tunnel processes (their pids give CPU seconds per GB) and `b`'s
overlay address. Configurations follow each project's documented minimal
setup with its default cipher; MTUs are their defaults (yggdrasil: 65535).
The namespaces' lab stops every process and removes every file it creates.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.support.netns import Namespace, NetnsLab, wait_until

UNDERLAY = {"a": "192.0.2.1", "b": "192.0.2.2"}
Processes = list["subprocess.Popen[str]"]
Launcher = Callable[[NetnsLab, Namespace, Namespace, Path], tuple[Processes, str]]


def _start(namespace: Namespace, argv: list[str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as output:
        return namespace.start(argv, stdout=output, stderr=subprocess.STDOUT)


def _reachable(a: Namespace, address: str, what: str) -> None:
    wait_until(
        lambda: a.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0,
        60,
        0.5,
        what,
    )


def fastd_pair(
    netns: NetnsLab, a: Namespace, b: Namespace, directory: Path
) -> tuple[Processes, str]:
    """fastd in TUN mode with its recommended method salsa2012+umac."""
    keys = {}
    for side in ("a", "b"):
        output = subprocess.run(
            ["fastd", "--generate-key"], capture_output=True, text=True, check=True
        ).stdout
        fields = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
        keys[side] = (fields["Secret"].strip(), fields["Public"].strip())
    pids: Processes = []
    for namespace, own, other, address in (
        (a, "a", "b", "10.234.1.1"),
        (b, "b", "a", "10.234.1.2"),
    ):
        device = netns.name("fd")
        config = directory / f"fastd-{own}.conf"
        config.write_text(
            f'log level warn;\ninterface "{device}";\nmode tun;\nmethod "salsa2012+umac";\n'
            f"bind {UNDERLAY[own]}:10000;\n"
            f'secret "{keys[own][0]}";\nmtu 1426;\n'
            f'on up sync "ip addr add {address}/24 dev $INTERFACE && ip link set $INTERFACE up";\n'
            f'peer "{other}" {{\n  key "{keys[other][1]}";\n  remote {UNDERLAY[other]}:10000;\n}}\n'
        )
        pids.append(
            _start(namespace, ["fastd", "--config", str(config)], directory / f"fastd-{own}.log")
        )
    _reachable(a, "10.234.1.2", "fastd tunnel")
    return pids, "10.234.1.2"


def tinc_pair(
    netns: NetnsLab, a: Namespace, b: Namespace, directory: Path
) -> tuple[Processes, str]:
    """tinc 1.0 in router mode with its default cipher (Blowfish-CBC, HMAC-SHA1)."""
    roots = {side: directory / f"tinc-{side}" for side in ("a", "b")}
    addresses = {"a": "10.234.2.1", "b": "10.234.2.2"}
    for side, root in roots.items():
        (root / "hosts").mkdir(parents=True)
        device = netns.name("tc")
        connect = "ConnectTo = a\n" if side == "b" else ""
        (root / "tinc.conf").write_text(
            f"Name = {side}\nInterface = {device}\nDevice = /dev/net/tun\nAddressFamily = ipv4\n"
            f"BindToAddress = {UNDERLAY[side]}\n{connect}"
        )
        (root / "hosts" / side).write_text(
            f"Address = {UNDERLAY[side]}\nSubnet = {addresses[side]}/32\n"
        )
        up = root / "tinc-up"
        up.write_text(
            f"#!/bin/sh\nip addr add {addresses[side]}/24 dev $INTERFACE\n"
            "ip link set $INTERFACE up\n"
        )
        up.chmod(0o755)
        subprocess.run(
            ["tincd", "-c", str(root), "-K", "2048"],
            input="\n\n",
            capture_output=True,
            text=True,
            check=True,
        )
    for side, other in (("a", "b"), ("b", "a")):
        shutil.copy(roots[other] / "hosts" / other, roots[side] / "hosts" / other)
    pids = [
        _start(namespace,
               ["tincd", "-c", str(roots[side]), "-D", "--pidfile", str(roots[side] / "pid")],
               directory / f"tinc-{side}.log")
        for namespace, side in ((a, "a"), (b, "b"))
    ]  # fmt: skip
    _reachable(a, "10.234.2.2", "tinc tunnel")
    return pids, "10.234.2.2"


def nebula_pair(
    netns: NetnsLab, a: Namespace, b: Namespace, directory: Path
) -> tuple[Processes, str]:
    """nebula with a private CA, hosts found by static_host_map, an allow-all firewall."""
    root = directory / "nebula"
    root.mkdir()
    subprocess.run(
        ["nebula-cert", "ca", "-name", "bench", "-out-crt", str(root / "ca.crt"),
         "-out-key", str(root / "ca.key")],
        capture_output=True, check=True,
    )  # fmt: skip
    addresses = {"a": "10.234.3.1", "b": "10.234.3.2"}
    pids: Processes = []
    for namespace, side, other in ((a, "a", "b"), (b, "b", "a")):
        subprocess.run(
            ["nebula-cert", "sign", "-ca-crt", str(root / "ca.crt"),
             "-ca-key", str(root / "ca.key"), "-name", side, "-ip", f"{addresses[side]}/24",
             "-out-crt", str(root / f"{side}.crt"), "-out-key", str(root / f"{side}.key")],
            capture_output=True, check=True,
        )  # fmt: skip
        config = {
            "pki": {"ca": str(root / "ca.crt"), "cert": str(root / f"{side}.crt"),
                    "key": str(root / f"{side}.key")},
            "static_host_map": {addresses[other]: [f"{UNDERLAY[other]}:4242"]},
            "lighthouse": {"am_lighthouse": False, "hosts": []},
            "listen": {"host": UNDERLAY[side], "port": 4242},
            "punchy": {"punch": False},
            "tun": {"dev": netns.name("nb"), "mtu": 1300},
            "logging": {"level": "warning"},
            "firewall": {
                "outbound": [{"port": "any", "proto": "any", "host": "any"}],
                "inbound": [{"port": "any", "proto": "any", "host": "any"}],
            },
        }  # fmt: skip
        path = root / f"{side}.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        pids.append(
            _start(namespace, ["nebula", "-config", str(path)], directory / f"nebula-{side}.log")
        )
    _reachable(a, addresses["b"], "nebula tunnel")
    return pids, addresses["b"]


def yggdrasil_pair(
    netns: NetnsLab, a: Namespace, b: Namespace, directory: Path
) -> tuple[Processes, str]:
    """yggdrasil with one TCP peering a <- b and its default 65535-byte MTU."""
    pids: Processes = []
    addresses = {}
    for namespace, side in ((a, "a"), (b, "b")):
        config = json.loads(
            subprocess.run(["yggdrasil", "-genconf", "-json"], capture_output=True, text=True,
                           check=True).stdout
        )  # fmt: skip
        config["IfName"] = netns.name("yg")
        config["AdminListen"] = "none"
        config["MulticastInterfaces"] = []
        config["Listen"] = [f"tcp://{UNDERLAY['a']}:9000"] if side == "a" else []
        config["Peers"] = [f"tcp://{UNDERLAY['a']}:9000"] if side == "b" else []
        path = directory / f"yggdrasil-{side}.conf"
        path.write_text(json.dumps(config))
        addresses[side] = subprocess.run(
            ["yggdrasil", "-useconffile", str(path), "-address"], capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        pids.append(
            _start(
                namespace, ["yggdrasil", "-useconffile", str(path)], directory / f"ygg-{side}.log"
            )
        )
    _reachable(a, addresses["b"], "yggdrasil tunnel")
    return pids, addresses["b"]


REFERENCES: dict[str, tuple[str, Launcher]] = {
    "fastd": ("fastd", fastd_pair),
    "tinc": ("tincd", tinc_pair),
    "nebula": ("nebula", nebula_pair),
    "yggdrasil": ("yggdrasil", yggdrasil_pair),
}
"""Name -> (program that must be installed, launcher)."""
