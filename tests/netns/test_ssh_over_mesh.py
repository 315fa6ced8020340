"""`ssh server.mesh true` just works: issue 7's end to end, with real OpenSSH.

Node "server" runs sshd (Debian openssh-server) in its namespace; node
"client" runs its daemon with `--dns resolv-conf`, so glibc in the client's
namespace asks MagicDNS. The client types only `server.mesh`: no IP address
appears in the ssh command, the sshd configuration or the client's resolver
configuration.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.netns.test_dns_daemon import server_and_client
from tests.support.mesh_lab import CONVERGE_TIMEOUT, DaemonNode, MeshLab, require_daemon_lab
from tests.support.netns import Namespace, NetnsLab

pytestmark = pytest.mark.netns

SSHD = "/usr/sbin/sshd"
SSH_PORT = 2222


def sshd_files(directory: Path) -> tuple[Path, Path]:
    """A host key, a client key authorized for root, and a config naming them.

    Returns (sshd config, client private key).
    """
    directory.mkdir()
    host_key = directory / "ssh_host_ed25519_key"
    client_key = directory / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    authorized = directory / "authorized_keys"
    authorized.write_bytes(client_key.with_suffix(".pub").read_bytes())
    config = directory / "sshd_config"
    config.write_text(
        f"Port {SSH_PORT}\n"
        f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
    )
    return config, client_key


def start_sshd(namespace: Namespace, config: Path, log: Path) -> subprocess.Popen[str]:
    """sshd in the foreground (-D -e), on every address of `namespace`.

    sshd needs its privilege-separation directory /run/sshd. Rather than
    create it on the host, the shell mounts a tmpfs on /run inside the mount
    namespace `ip netns exec` gave it (private to this process tree).
    """
    script = 'mount -t tmpfs -o mode=755 gm-sshd /run && mkdir /run/sshd && exec "$@"'
    with log.open("w") as output:
        return namespace.start(
            ["sh", "-c", script, "sh", SSHD, "-D", "-e", "-f", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def ssh_until_it_works(mesh: MeshLab, client: DaemonNode, key: Path, deadline_s: float) -> str:
    """Run `ssh root@server.mesh` until it succeeds; returns its output."""
    argv = [
        "ssh", "-F", "none", "-i", str(key),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR",
        "-p", str(SSH_PORT), "root@server.mesh", "echo", "over-the-mesh",
    ]  # fmt: skip
    deadline = time.monotonic() + deadline_s
    attempts = 0
    while True:
        attempts += 1
        result = client.namespace.run(argv, check=False, timeout=15)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() >= deadline or attempts >= 60:
            raise AssertionError(
                f"ssh server.mesh still failing after {attempts} attempts "
                f"(exit {result.returncode}): {result.stderr}\n{mesh.describe()}"
            )
        time.sleep(0.25)  # pacing between retries, not synchronisation


def test_ssh_server_mesh_just_works(tmp_path: Path) -> None:
    require_daemon_lab("ssh", "ssh-keygen", SSHD)
    with NetnsLab("gms") as netns:
        mesh, server, client = server_and_client(netns, tmp_path)
        config, key = sshd_files(tmp_path / "ssh")
        sshd = start_sshd(server.namespace, config, tmp_path / "sshd.log")

        output = ssh_until_it_works(mesh, client, key, CONVERGE_TIMEOUT)
        assert output == "over-the-mesh\n"
        assert sshd.poll() is None, (tmp_path / "sshd.log").read_text()

        # Both families reach server.mesh by name (the route exists by now).
        for family in ("-6", "-4"):
            client.namespace.run(["ping", family, "-c", "1", "-w", "5", "server.mesh"])

        # It went over the mesh: sshd saw the client's mesh address, not its underlay one.
        sshd_log = (tmp_path / "sshd.log").read_text()
        assert f"from {client.ipv4} " in sshd_log or f"from {client.ipv6} " in sshd_log, sshd_log
