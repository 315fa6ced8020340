"""Issue 17 end to end: certificates, a signed default-deny policy, revocation, attackers.

Four certified daemons in namespaces: web1 and web2 (group web), dev (dev)
and db (db). The policy lets dev reach web on tcp/22 and ICMP; a real sshd
on web1 and real TCP connects check it, replies included. Then a newer
policy opening tcp/80 is pushed from db (any member can push; only the
authority can sign), older and forged ones are pushed and refused, web2 is
revoked, a fifth node's 30-second certificate expires (and `up` refuses it
afterwards), and intruders try to join: a node with no certificate, one with a
certificate from another authority, and a certified member flooding web1
with real handshake initiations. The propagation times are printed (run
with -s to see them); they are measured, never asserted against a figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.test_ssh_over_mesh import SSHD, sshd_files, start_sshd
from tests.support.mesh_lab import (
    CONVERGE_TIMEOUT,
    MESH_PORT,
    DaemonNode,
    MeshLab,
    ping_until,
    require_daemon_lab,
)
from tests.support.netns import NetnsLab, wait_until
from tests.support.trust_lab import Authority, document_version

pytestmark = pytest.mark.netns

POLICY = """\
version = {version}

[[rules]]
from = ["group:dev"]
to = ["group:web"]
proto = "tcp"
ports = [{ports}]

[[rules]]
from = ["group:dev"]
to = ["group:web"]
proto = "icmp"

[[tests]]
from = "group:dev"
to = "group:web"
proto = "tcp"
port = 22
expect = "allow"

[[tests]]
from = "group:db"
to = "group:web"
proto = "tcp"
port = 22
expect = "deny"
"""
PROPAGATION_TIMEOUT = 20.0


def tcp_connects(source: DaemonNode, address: str, port: int) -> bool:
    """A real TCP connect from `source`'s namespace, 3 s at most."""
    script = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=3).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return source.namespace.run([sys.executable, "-c", script], check=False).returncode == 0


def ssh_works(source: DaemonNode, key: Path, address: str) -> bool:
    argv = [
        "ssh", "-F", "none", "-i", str(key),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR",
        "-p", "22", f"root@{address}", "echo", "allowed",
    ]  # fmt: skip
    result = source.namespace.run(argv, check=False, timeout=15)
    return result.returncode == 0 and result.stdout == "allowed\n"


def wait_version(nodes: list[DaemonNode], kind: str, version: int) -> float:
    """Seconds until every node holds `version` of `kind`."""
    start = time.monotonic()
    wait_until(
        lambda: all(document_version(n, kind) == version for n in nodes),
        PROPAGATION_TIMEOUT,
        0.05,
        f"{kind} version {version} on every node",
    )
    return time.monotonic() - start


def lists(node: DaemonNode, other: DaemonNode) -> bool:
    return any(row["name"] == other.name for row in node.peers())


def resolves(node: DaemonNode, name: str) -> bool:
    answer = json.loads(node.cli("resolve", name, "--json").stdout)
    return bool(answer.get("found"))


def counter(node: DaemonNode, name: str) -> int:
    return int(node.status()["counters"].get(name, 0))


def test_certificates_policy_revocation_and_intruders(tmp_path: Path) -> None:
    require_daemon_lab("ssh", "ssh-keygen", SSHD)
    with NetnsLab("gmtr") as netns:
        mesh = MeshLab(netns, tmp_path)
        authority = Authority(tmp_path / "authority")
        web1, web2, dev, db = mesh.add_nodes("web1", "web2", "dev", "db")
        groups = {web1: ["web"], web2: ["web"], dev: ["dev"], db: ["db"]}
        certs = {node: authority.certify(node, groups[node]) for node in groups}
        web1.start([], *authority.up_args(certs[web1]))
        for node in (web2, dev, db):
            node.start([web1], *authority.up_args(certs[node]), wait=False)
        for node in (web2, dev, db):
            node.wait_ready()
        members = [web1, web2, dev, db]
        mesh.wait_full_mesh()
        assert {row["name"]: row.get("groups") for row in dev.peers()}["web1"] == ["web"]

        # A certificate that expires while its node is in the mesh (checked again later).
        short = mesh.add_node("short")
        short_cert = authority.certify(short, ["web"], valid_for="30s")
        short.start([web1], *authority.up_args(short_cert))
        short_expires = time.monotonic() + 30
        wait_until(lambda: lists(web1, short), CONVERGE_TIMEOUT, 0.2, "short admitted")

        # No policy yet: default deny, even ICMP.
        assert not dev.ping(web1.ipv4)

        # Policy v1, pushed at dev, in force everywhere.
        v1 = authority.sign_policy(POLICY.format(version=1, ports='"22"'), "v1")
        dev.cli("policy", "push", str(v1))
        policy_v1_s = wait_version(members, "policy", 1)

        ping_until(dev, web1.ipv4)  # dev -> web: ICMP allowed, the replies pass back
        assert not db.ping(web1.ipv4)  # db reaches nothing
        assert not db.ping(dev.ipv4)
        assert not web1.ping(dev.ipv4)  # web -> dev was never allowed (replies only)

        config, ssh_key = sshd_files(tmp_path / "ssh")
        config.write_text(config.read_text().replace("Port 2222", "Port 22"))
        sshd = start_sshd(web1.namespace, config, tmp_path / "sshd.log")
        wait_until(lambda: ssh_works(dev, ssh_key, web1.ipv4), CONVERGE_TIMEOUT, 0.2, "ssh")
        assert not ssh_works(db, ssh_key, web1.ipv4)
        web_server = web1.namespace.start(
            [sys.executable, "-m", "http.server", "80", "--bind", "0.0.0.0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: tcp_connects(web1, "127.0.0.1", 80), 10.0, 0.1, "web1's http server")
        assert not tcp_connects(dev, web1.ipv4, 80)
        refused_before = counter(web1, "policy_dropped_no_rule")
        assert refused_before > 0

        # v2 opens tcp/80; db pushes it (it holds no key: the signature is the authority's).
        v2 = authority.sign_policy(POLICY.format(version=2, ports='"22", "80"'), "v2")
        db.cli("policy", "push", str(v2))
        policy_v2_s = wait_version(members, "policy", 2)
        assert tcp_connects(dev, web1.ipv4, 80)
        assert not tcp_connects(db, web1.ipv4, 80)

        # Older and forged policies are refused and counted; v2 stays in force.
        older = web2.cli("policy", "push", str(v1), check=False)
        assert older.returncode != 0 and "not_newer" in older.stderr
        forged_bytes = bytearray(
            authority.sign_policy(POLICY.format(version=3, ports='"1-65535"'), "v3").read_bytes()
        )
        forged_bytes[-70] ^= 0x20  # inside the TOML: "*" for any port is not what was signed
        forged = tmp_path / "forged.signed"
        forged.write_bytes(bytes(forged_bytes))
        refused = web2.cli("policy", "push", str(forged), check=False)
        assert refused.returncode != 0 and "bad_signature" in refused.stderr
        assert counter(web2, "documents_refused_not_newer") >= 1
        assert counter(web2, "documents_refused_bad_signature") >= 1
        assert all(document_version(n, "policy") == 2 for n in members)

        # Revoke web2: cut off everywhere, its name stops resolving.
        ping_until(dev, web2.ipv4)
        revocations = authority.revoke(certs[web2])
        start = time.monotonic()
        dev.cli("revocations", "push", str(revocations))
        others = [web1, dev, db]
        wait_until(
            lambda: not any(lists(n, web2) for n in others),
            PROPAGATION_TIMEOUT,
            0.05,
            "web2 gone from every peer table",
        )
        revocation_s = time.monotonic() - start
        assert not any(resolves(n, "web2") for n in others)
        assert not dev.ping(web2.ipv4)

        # The short certificate has expired (or soon will): every node drops its node, and
        # the daemon refuses to start again with it.
        wait_until(
            lambda: not any(lists(n, short) for n in others),
            max(0.0, short_expires - time.monotonic()) + PROPAGATION_TIMEOUT,
            0.2,
            "the expired node gone from every peer table",
        )
        assert time.monotonic() >= short_expires - 1  # not dropped before its time
        short.terminate()
        short.start([web1], *authority.up_args(short_cert), wait=False)
        assert short.process is not None and short.process.wait(timeout=20) != 0
        assert "expired" in short.log.read_text().splitlines()[-1]

        # Intruders: no certificate; a certificate from another authority. Both get the
        # network secret (the DHT seal), so only the certificate check keeps them out.
        rogue_authority = Authority(tmp_path / "rogue-authority", name="testnet")
        nocert, foreign = mesh.add_node("nocert"), mesh.add_node("foreign")
        foreign_cert = rogue_authority.certify(foreign, ["web"])
        nocert.start([web1])
        foreign.start([web1], *rogue_authority.up_args(foreign_cert))
        wait_until(
            lambda: counter(web1, "trust_refused_no_certificate") > 0,
            CONVERGE_TIMEOUT,
            0.2,
            "nocert refused",
        )
        wait_until(
            lambda: counter(web1, "trust_refused_wrong_authority") > 0,
            CONVERGE_TIMEOUT,
            0.2,
            "foreign refused",
        )
        for intruder in (nocert, foreign):
            assert not any(lists(n, intruder) for n in others)
            assert not intruder.ping(web1.ipv4)

        # A certified member floods web1 with real handshake initiations; dev's traffic holds.
        flood_cert = authority.certify(mesh.add_node("flood"), ["db"])
        flooder = mesh.nodes[-1]
        flooder.start([web1], *authority.up_args(flood_cert))
        wait_until(lambda: lists(web1, flooder), CONVERGE_TIMEOUT, 0.2, "flooder admitted")
        web1_key = web1.status()["public_key"]
        flood = flooder.namespace.start(
            [sys.executable, "-m", "tests.netns.handshake_flood", str(flooder.key),
             str(mesh.secret), web1_key, web1.underlay, str(MESH_PORT), "20000", "8"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        answered = sum(dev.ping(web1.ipv4) for _ in range(5))
        assert tcp_connects(dev, web1.ipv4, 80)
        out, err = flood.communicate(timeout=30)
        assert flood.returncode == 0, err
        flood_sent = int(out)
        assert flood_sent > 1000
        assert answered >= 4
        assert counter(web1, "session_cookie_replies_sent") > 0

        print(
            f"\npolicy v1 on all 4 nodes in {policy_v1_s:.2f} s; v2 in {policy_v2_s:.2f} s; "
            f"revocation on the other 3 in {revocation_s:.2f} s; during a flood of "
            f"{flood_sent} handshake initiations dev's pings answered {answered}/5"
        )
        assert sshd.poll() is None
        web_server.terminate()
