"""Pushing the authority's signed documents into a running mesh, and showing what is in force.

`policy push` and `revocations push` hand a signed file to the local daemon,
which verifies it, puts it in force at once and gossips it: every node of
the mesh has it within seconds. Any machine whose daemon is a member can
push; only the authority key can make a document that is accepted.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from gossipmesh.cli.instance import instance_options, state_dir_for
from gossipmesh.cli.tables import echo_fields, echo_json
from gossipmesh.errors import UsageError
from gossipmesh.runtime.control import call_daemon
from gossipmesh.statefiles import read_operator_file
from gossipmesh.trust.document import MAX_DOCUMENT_SIZE


def _read_signed(path: Path) -> bytes:
    data = read_operator_file(path, MAX_DOCUMENT_SIZE, "signed document")
    if len(data) > MAX_DOCUMENT_SIZE:
        raise UsageError(f"{path}: larger than {MAX_DOCUMENT_SIZE} bytes: not a signed document")
    return data


def push_document(interface: str, state_dir: Path | None, path: Path, as_json: bool) -> None:
    data = _read_signed(path)
    result = call_daemon(
        state_dir_for(interface, state_dir).control_socket,
        "push-document",
        {"document": base64.b64encode(data).decode("ascii")},
    )
    if as_json:
        echo_json(result)
        return
    click.echo(f"{result['kind']} version {result['version']} in force here; spreading to the mesh")


def document_push_command(kind: str, example: str) -> click.Command:
    @click.command("push")
    @instance_options
    @click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    def push(interface: str, state_dir: Path | None, path: Path, as_json: bool) -> None:
        push_document(interface, state_dir, path, as_json)

    push.help = (
        f"Put a signed {kind} in force on the local daemon and spread it to every node.\n\n"
        "The daemon refuses (and says why) a file not signed by the network's authority, "
        "or not newer than the version it holds.\n\n"
        f"\b\nExample:\n  {example}"
    )
    return push


@click.command("show")
@instance_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def policy_show(interface: str, state_dir: Path | None, as_json: bool) -> None:
    """The authority, and the policy and revocation list in force on the local daemon."""
    result: dict[str, Any] = call_daemon(
        state_dir_for(interface, state_dir).control_socket, "trust"
    )
    if as_json:
        echo_json(result)
        return
    documents = result.get("documents", {})
    fields: dict[str, Any] = {"authority": result.get("authority") or "none (shared secret only)"}
    for kind in ("policy", "revocations"):
        held = documents.get(kind)
        fields[kind] = "none" if held is None else f"version {held['version']}"
    echo_fields(fields)
    source = result.get("policy_source")
    if source:
        click.echo("rules in force:")
        for line in source.splitlines():
            click.echo(f"  {line}")
    elif result.get("authority"):
        click.echo("no policy yet: every new flow into this node is denied")


@click.group("revocations")
def revocations() -> None:
    """The authority's list of revoked certificates, as it spreads through the mesh.

    \b
    Make it offline:  gossipmesh cert revoke --authority authority.key ...
    Spread it:        gossipmesh revocations push revocations.signed
    """


revocations.add_command(
    document_push_command("revocation list", "gossipmesh revocations push revocations.signed")
)
policy_push = document_push_command("policy", "gossipmesh policy push policy.signed")
