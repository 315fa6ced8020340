"""Entry point: the click group and the commands that need no daemon."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import click

from gossipmesh import __version__
from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, first_ipv4, ipv6_for, parse_ipv4_network
from gossipmesh.cli.daemon import DAEMON_COMMANDS
from gossipmesh.cli.documents import revocations
from gossipmesh.cli.errors import ErrorReportingGroup
from gossipmesh.cli.policy import policy
from gossipmesh.cli.simulate import simulate, sweep
from gossipmesh.cli.trust import TRUST_COMMANDS
from gossipmesh.errors import UsageError
from gossipmesh.identity import (
    Identity,
    decode_public_key,
    encode_public_key,
    load_key_file,
    node_id_from_public_key,
    write_key_file,
)
from gossipmesh.names import key_name


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gossipmesh")
def main() -> None:
    """gossipmesh: one private IPv4/IPv6 network across your machines, with no server.

    \b
    Start here:
      gossipmesh keygen node.key          create this node's identity
      gossipmesh addr --key node.key      show the addresses it derives
      sudo gossipmesh up --key node.key --network-secret net.secret \\
          --bootstrap OTHER-NODE:51821    join a mesh (runs in the foreground)
      gossipmesh status | peers | routes  inspect the running daemon
      gossipmesh ping NAME                mesh-level ping, shows the path
    """


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keygen(path: Path) -> None:
    """Create a new node key at PATH (mode 0600; never overwrites).

    The key is the node's identity: its node id, addresses and key-derived
    name all follow from it. Keep it secret and back it up.
    """
    identity = Identity.generate()
    write_key_file(path, identity)
    click.echo(f"wrote {path}")
    click.echo(f"public key: {encode_public_key(identity.public_key)}")


def address_report(public_key: bytes, network: ipaddress.IPv4Network) -> dict[str, str | int]:
    """What `addr` prints: everything derivable from a public key alone."""
    node_id = node_id_from_public_key(public_key)
    counter, ipv4 = first_ipv4(public_key, network)
    return {
        "node_id": node_id.hex(),
        "public_key": encode_public_key(public_key),
        "ipv6": str(ipv6_for(public_key)),
        "ipv4": str(ipv4),
        "ipv4_counter": counter,
        "key_name": key_name(node_id),
    }


@main.command()
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Node key file.")
@click.option("--public-key", help="A node's public key in base64, as `addr` prints it.")
@click.option(
    "--ipv4-network",
    default=str(DEFAULT_IPV4_NETWORK),
    show_default=True,
    help="The mesh's IPv4 CIDR.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def addr(key_path: Path | None, public_key: str | None, ipv4_network: str, as_json: bool) -> None:
    """Print the node id, public key, addresses and key name of a key.

    The IPv4 shown is the first free candidate (counter 0 unless reserved);
    in a running mesh a collision can move a newcomer to a later counter.
    """
    if (key_path is None) == (public_key is None):
        raise UsageError("give exactly one of --key PATH or --public-key BASE64")
    if key_path is not None:
        raw = load_key_file(key_path).public_key
    else:
        assert public_key is not None
        try:
            raw = decode_public_key(public_key)
        except ValueError as exc:
            raise UsageError(f"--public-key: {exc}") from None
    try:
        network = parse_ipv4_network(ipv4_network)
    except ValueError as exc:
        raise UsageError(f"--ipv4-network: {exc}") from None
    report = address_report(raw, network)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    width = max(len(k) for k in report)
    for field_name, value in report.items():
        click.echo(f"{field_name.replace('_', ' '):<{width}}  {value}")


for _command in [*DAEMON_COMMANDS, *TRUST_COMMANDS, policy, revocations, simulate, sweep]:
    main.add_command(_command)


if __name__ == "__main__":
    main()
