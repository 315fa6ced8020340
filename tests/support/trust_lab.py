"""A network authority for daemon tests, used through the CLI as an operator would.

authority = Authority(tmp_path / "authority")          # gossipmesh network init
cert = authority.certify(node, groups=["web"])         # gossipmesh keygen + cert sign
node.start([], *authority.up_args(node, cert))         # up --network ... --cert ...
signed = authority.sign_policy(POLICY_TOML, "v1")      # gossipmesh policy sign
node.cli("policy", "push", str(signed))
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.mesh_lab import GOSSIPMESH, DaemonNode


def gossipmesh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI on the host (the authority's machine needs no namespace)."""
    result = subprocess.run(
        [GOSSIPMESH, *args], capture_output=True, text=True, timeout=30, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"gossipmesh {' '.join(args)} failed: {result.stderr}")
    return result


class Authority:
    """One network's offline authority: its key, network.json, certificates, documents."""

    def __init__(self, directory: Path, name: str = "testnet") -> None:
        self.directory = directory
        gossipmesh("network", "init", str(directory), "--name", name)
        self.key = directory / "authority.key"
        self.network = directory / "network.json"
        self.revocations = directory / "revocations.signed"

    def certify(
        self,
        node: DaemonNode,
        groups: Sequence[str] = (),
        valid_for: str = "30d",
        routes: Sequence[str] = (),
    ) -> Path:
        """A key for `node` (if it has none yet) and a certificate naming it, in its directory."""
        if not node.key.exists():
            gossipmesh("keygen", str(node.key))
        cert = node.directory / "node.cert"
        cert.unlink(missing_ok=True)
        argv = [
            "cert", "sign", "--authority", str(self.key), "--network", str(self.network),
            "--key", str(node.key), "--name", node.name, "--valid-for", valid_for,
            "--out", str(cert),
        ]  # fmt: skip
        for group in groups:
            argv += ["--group", group]
        for route in routes:
            argv += ["--route", route]
        gossipmesh(*argv)
        return cert

    def up_args(self, cert: Path) -> list[str]:
        return ["--network", str(self.network), "--cert", str(cert)]

    def sign_policy(self, source: str, label: str) -> Path:
        policy = self.directory / f"policy-{label}.toml"
        policy.write_text(source)
        signed = self.directory / f"policy-{label}.signed"
        signed.unlink(missing_ok=True)
        gossipmesh(
            "policy", "sign", str(policy), "--authority", str(self.key), "--out", str(signed)
        )
        return signed

    def revoke(self, cert: Path) -> Path:
        gossipmesh(
            "cert", "revoke", "--authority", str(self.key), "--network", str(self.network),
            "--list", str(self.revocations), "--cert", str(cert),
        )  # fmt: skip
        return self.revocations


def trust_view(node: DaemonNode) -> dict[str, Any]:
    """`gossipmesh policy show --json` of a running node."""
    view: dict[str, Any] = json.loads(node.cli("policy", "show", "--json").stdout)
    return view


def document_version(node: DaemonNode, kind: str) -> int | None:
    held = trust_view(node)["documents"].get(kind)
    return None if held is None else int(held["version"])
