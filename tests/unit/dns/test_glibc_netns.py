"""glibc (getent) in a network namespace resolves mesh names through MagicDNS.

This is what `ssh server.mesh` relies on: the namespace's resolv.conf
(`/etc/netns/NAME/resolv.conf`, which `ip netns exec` bind-mounts) is
edited to point at 100.100.100.100, and restored byte for byte on stop.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ORIGINAL = "nameserver 192.0.2.99\n"

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed"),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"gmdns{secrets.token_hex(4)}"
    etc = Path("/etc/netns") / name
    try:
        ip("netns", "add", name)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(ORIGINAL)
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "addr", "add", "100.100.100.100/32", "dev", "lo")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
        shutil.rmtree(etc, ignore_errors=True)


def getent(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "getent", *args],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


def test_getent_resolves_mesh_names_in_a_namespace(namespace: str, tmp_path: Path) -> None:
    module = "tests.unit.dns.netns_resolver"
    resolver = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", module, namespace, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert resolver.stdout is not None
        readable, _, _ = select.select([resolver.stdout], [], [], 15)
        assert readable, "the resolver did not start within 15 s"
        assert resolver.stdout.readline() == "ready\n", resolver.stderr
        conf = (Path("/etc/netns") / namespace / "resolv.conf").read_text()
        assert "nameserver 100.100.100.100" in conf
        ipv4 = getent(namespace, "ahostsv4", "server.mesh")
        assert ipv4.returncode == 0, ipv4.stderr
        assert ipv4.stdout.split()[0] == "100.64.1.2"
        ipv6 = getent(namespace, "hosts", "SERVER.mesh")  # getent hosts asks AAAA first
        assert ipv6.stdout.split()[0] == "fd12:3456:789a::1"
        reverse = getent(namespace, "hosts", "100.64.1.2")
        assert reverse.stdout.split()[1:] == ["server.mesh"]
        assert getent(namespace, "hosts", "nobody.mesh").returncode == 2  # not found
    finally:
        resolver.send_signal(signal.SIGTERM)
        try:
            out, _ = resolver.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            resolver.kill()
            out, _ = resolver.communicate(timeout=10)
    assert out.strip() == "restored"
    assert (Path("/etc/netns") / namespace / "resolv.conf").read_text() == ORIGINAL
