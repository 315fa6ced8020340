"""`gossipmesh network` and `gossipmesh cert`: the operator's side of the network authority.

These run where the authority key is (ideally a machine that is offline):
they create the network, sign node certificates and revoke them. Nothing
here talks to a daemon.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from pathlib import Path

import click

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, parse_ipv4_network, reserved_ipv4
from gossipmesh.cli.tables import echo_fields, echo_json
from gossipmesh.cli.trust_report import (
    certificate_report,
    counted,
    human_fields,
    parse_duration,
    refusal_text,
    span,
    utc,
)
from gossipmesh.errors import ConfigError, UsageError
from gossipmesh.identity import Identity, decode_public_key, encode_public_key, load_key_file
from gossipmesh.names import normalize_label
from gossipmesh.trust.authority import (
    NetworkDescription,
    encode_network_file,
    load_network_authority,
    load_network_file,
    write_authority_key,
)
from gossipmesh.trust.certificate import (
    CertificateError,
    NodeCertificate,
    encode_certificate_file,
    load_certificate_file,
    sign_certificate,
)
from gossipmesh.trust.document import DocumentError, SignedDocument
from gossipmesh.trust.revocation import (
    RevocationError,
    RevocationList,
    load_revocation_file,
    revocations_of,
    sign_revocations,
    write_revocation_file,
)

_PATH = click.Path(dir_okay=False, path_type=Path)
_AUTHORITY_HELP = "The network's authority key (authority.key from `network init`)."
_NETWORK_HELP = "The network's network.json."


def _create_new(path: Path, data: bytes, what: str, mode: int = 0o644) -> None:
    """Write a file that must not exist yet (O_EXCL), removing it again if the write fails."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise UsageError(f"{path}: already exists; refusing to overwrite a {what}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot create {what}: {exc.strerror}") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write {what}: {exc.strerror}") from None
    os.close(fd)


def _public_key(text: str, option: str = "--public-key") -> bytes:
    try:
        return decode_public_key(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


# --- gossipmesh network ---------------------------------------------------------


@click.group()
def network() -> None:
    """Create a network with its own authority (certificates instead of a shared secret).

    \b
    On a machine you trust, ideally offline:
      gossipmesh network init ./home-net --name home
      gossipmesh cert sign --authority ./home-net/authority.key \\
          --network ./home-net/network.json --public-key NODE-PUBLIC-KEY \\
          --name laptop --out laptop.cert
    Give each node network.json and its own certificate; keep authority.key
    offline.
    """


@network.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True, help="The network's name, a DNS label (e.g. home).")
@click.option(
    "--ipv4-network",
    default=str(DEFAULT_IPV4_NETWORK),
    show_default=True,
    help="The mesh's IPv4 CIDR.",
)
def init(directory: Path, name: str, ipv4_network: str) -> None:
    """Create DIRECTORY/authority.key and DIRECTORY/network.json (never overwrites).

    authority.key (mode 0600) is the network authority: whoever holds it can
    admit any node, so move it off this machine once you have signed the
    first certificates. network.json is public: every node gets a copy.
    """
    name = normalize_label(name)
    try:
        cidr = parse_ipv4_network(ipv4_network)
    except ValueError as exc:
        raise UsageError(f"--ipv4-network: {exc}") from None
    key_path, network_path = directory / "authority.key", directory / "network.json"
    for path in (key_path, network_path):
        if os.path.lexists(path):
            raise UsageError(f"{path}: already exists; refusing to overwrite a network")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot create directory: {exc.strerror}") from None
    authority = Identity.generate()
    desc = NetworkDescription(name, authority.public_key, cidr, int(time.time()))
    write_authority_key(key_path, authority)
    try:
        _create_new(network_path, encode_network_file(desc, authority), "network file")
    except UsageError:
        key_path.unlink(missing_ok=True)  # signed nothing yet: leave no half network
        raise
    click.echo(f"network {name!r}, IPv4 {cidr}")
    click.echo(f"wrote {key_path}: the authority's private key (0600); it signs certificates")
    click.echo(f"wrote {network_path}: the network's public description; give it to every node")
    click.echo(f"authority public key: {encode_public_key(authority.public_key)}")
    click.echo(
        "keep authority.key offline: after signing, move it off this machine; "
        "whoever holds it can admit any node"
    )


# --- gossipmesh cert ----------------------------------------------------------------


@click.group()
def cert() -> None:
    """Sign, inspect and revoke node certificates.

    \b
    gossipmesh addr --key node.key              on the node: its public key
    gossipmesh cert sign --authority authority.key --network network.json \\
        --public-key KEY --name laptop --group dev --valid-for 90d --out laptop.cert
    gossipmesh cert show laptop.cert --network network.json
    gossipmesh cert revoke --authority authority.key --network network.json \\
        --list revocations.bin --cert laptop.cert
    gossipmesh revocations push revocations.bin    spreads it to the mesh
    """


@cert.command()
@click.option("--authority", "authority_path", type=_PATH, required=True, help=_AUTHORITY_HELP)
@click.option("--network", "network_path", type=_PATH, required=True, help=_NETWORK_HELP)
@click.option("--key", "key_path", type=_PATH, help="The node's key file (if it is here).")
@click.option("--public-key", help="The node's public key in base64, as `addr` prints it.")
@click.option("--name", default="", help="The DNS label the node may claim (NAME.mesh).")
@click.option(
    "--group", "groups", multiple=True, metavar="GROUP", help="A group it is in (repeatable)."
)
@click.option("--ipv4", metavar="ADDR", help="A fixed IPv4 granted, inside the network's CIDR.")
@click.option(
    "--route",
    "routes",
    multiple=True,
    metavar="CIDR",
    help="A prefix it may advertise for machines behind it (repeatable).",
)
@click.option("--exit-node", is_flag=True, help="It may offer a way out to the internet.")
@click.option("--valid-for", default="365d", show_default=True, help="e.g. 90d, 12h, 2w.")
@click.option("--out", "out_path", type=_PATH, required=True, help="The certificate to write.")
def sign(
    authority_path: Path,
    network_path: Path,
    key_path: Path | None,
    public_key: str | None,
    name: str,
    groups: tuple[str, ...],
    ipv4: str | None,
    routes: tuple[str, ...],
    exit_node: bool,
    valid_for: str,
    out_path: Path,
) -> None:
    """Sign a certificate for one node key and write it to --out (never overwrites).

    The certificate says who the node is (name, groups) and what it may claim
    (a fixed IPv4, routed prefixes, exit node) until it expires. Prefer
    --public-key: the node's private key need not come to this machine.
    """
    if (key_path is None) == (public_key is None):
        raise UsageError("give exactly one of --key PATH or --public-key BASE64")
    desc = load_network_file(network_path)
    authority = load_network_authority(authority_path, desc)
    node_key = load_key_file(key_path).public_key if key_path else _public_key(public_key or "")
    if node_key == authority.public_key:
        raise UsageError("that is the authority's own key; a node needs a key of its own")
    granted = _granted_ipv4(ipv4, desc) if ipv4 else None
    prefixes = [_route(text) for text in routes]
    lifetime = parse_duration(valid_for)
    if os.path.lexists(out_path):
        raise UsageError(f"{out_path}: already exists; refusing to overwrite a certificate")
    now = int(time.time())
    try:
        signed = sign_certificate(
            authority, node_key, name, groups, granted, prefixes, exit_node, now, now + lifetime
        )
    except CertificateError as exc:
        raise UsageError(f"cannot sign: {exc.detail}") from None
    _create_new(out_path, encode_certificate_file(signed), "certificate")
    click.echo(f"wrote {out_path}")
    click.echo(f"serial       {signed.serial}")
    click.echo(f"valid from   {utc(signed.not_before)}")
    click.echo(f"valid until  {utc(signed.not_after)} ({span(lifetime)})")
    click.echo(f"node key     {encode_public_key(node_key)}")
    click.echo(f"name         {signed.name or '-'}; groups: {', '.join(signed.groups) or '-'}")


def _granted_ipv4(text: str, desc: NetworkDescription) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise UsageError(f"--ipv4 {text!r}: not an IPv4 address") from None
    if address not in desc.ipv4_network:
        raise UsageError(
            f"--ipv4 {address}: outside the network's {desc.ipv4_network} (from the network file)"
        )
    if address in reserved_ipv4(desc.ipv4_network):
        raise UsageError(f"--ipv4 {address}: reserved (network, broadcast or the DNS resolver)")
    return address


def _route(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; did you mean {ipaddress.ip_network(text, strict=False)}?"
        raise UsageError(f"--route {text!r}: {exc}{hint}") from None


@cert.command()
@click.argument("path", type=_PATH)
@click.option("--network", "network_path", type=_PATH, help="Also say if it is valid there now.")
@click.option(
    "--revocations",
    "revocations_path",
    type=_PATH,
    help="The network's revocation list, to check too (needs --network).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (raw numbers).")
def show(
    path: Path, network_path: Path | None, revocations_path: Path | None, as_json: bool
) -> None:
    """Explain a certificate: the node, what it grants and until when.

    With --network, also whether it is valid for that network now, and why
    not; the exit status is then 1 when it is not.
    """
    if revocations_path is not None and network_path is None:
        raise UsageError("--revocations needs --network (the list is checked against it)")
    certificate = load_certificate_file(path)
    desc = load_network_file(network_path) if network_path else None
    now = time.time()
    report = certificate_report(certificate, desc.ipv4_network if desc else DEFAULT_IPV4_NETWORK)
    fields = human_fields(report, now)
    error: CertificateError | None = None
    if desc is not None:
        revoked = _revocations(revocations_path, desc) if revocations_path else None
        try:
            certificate.check(desc.authority_public_key, certificate.node_public_key, now, revoked)
        except CertificateError as exc:
            error = exc
        report.update(network=desc.name, valid=error is None)
        report["refusal"] = error.reason.value if error else None
        fields[f"network {desc.name}"] = (
            "valid now" if error is None else f"NOT valid: {refusal_text(error, certificate, now)}"
        )
    if as_json:
        echo_json(report)
    else:
        echo_fields(fields)
    if error is not None:
        raise click.exceptions.Exit(1)


def _revocations(path: Path, desc: NetworkDescription) -> RevocationList:
    document = load_revocation_file(path)
    if document is None:
        raise ConfigError(f"{path}: revocation list does not exist")
    return _verified(document, path, desc)


def _verified(document: SignedDocument, path: Path, desc: NetworkDescription) -> RevocationList:
    try:
        return revocations_of(document, desc.authority_public_key)
    except DocumentError as exc:
        raise ConfigError(
            f"{path}: not a revocation list of network {desc.name!r} ({exc})"
        ) from None


@cert.command()
@click.option("--authority", "authority_path", type=_PATH, required=True, help=_AUTHORITY_HELP)
@click.option("--network", "network_path", type=_PATH, required=True, help=_NETWORK_HELP)
@click.option(
    "--list",
    "list_path",
    type=_PATH,
    required=True,
    help="The revocation list file; created if missing.",
)
@click.option(
    "--serial", "serials", type=int, multiple=True, help="A serial, as `cert show` prints it."
)
@click.option("--cert", "cert_paths", type=_PATH, multiple=True, help="A certificate file.")
@click.option(
    "--public-key", "public_keys", multiple=True, help="A node key: every certificate of it."
)
def revoke(
    authority_path: Path,
    network_path: Path,
    list_path: Path,
    serials: tuple[int, ...],
    cert_paths: tuple[Path, ...],
    public_keys: tuple[str, ...],
) -> None:
    """Add certificates or node keys to the revocation list and sign a new version.

    Each of --serial, --cert and --public-key is repeatable; --public-key
    revokes every certificate of that key (a lost or stolen machine). The
    list only grows and its version only rises, so an older copy can never
    undo a revocation. `gossipmesh revocations push FILE` spreads it.
    """
    if not (serials or cert_paths or public_keys):
        raise UsageError("name what to revoke: --serial N, --cert FILE or --public-key KEY")
    desc = load_network_file(network_path)
    authority = load_network_authority(authority_path, desc)
    added_serials = list(serials)
    for path in cert_paths:
        added_serials.append(_own_certificate(path, desc).serial)
    added_keys = [_public_key(text) for text in public_keys]
    held = load_revocation_file(list_path)
    current = _verified(held, list_path, desc) if held is not None else RevocationList()
    try:
        updated = current.with_added(serials=added_serials, public_keys=added_keys)
    except RevocationError as exc:
        raise UsageError(f"cannot revoke: {exc}") from None
    version = (held.version if held is not None else 0) + 1
    if updated == current:
        click.echo(f"already revoked; {list_path} unchanged at version {version - 1}")
        return
    document = sign_revocations(authority, updated, version, int(time.time()))
    write_revocation_file(list_path, document)
    click.echo(
        f"wrote {list_path}: version {version}, {counted(len(updated), 'entry', 'entries')} "
        f"({counted(len(updated.serials), 'serial')}, "
        f"{counted(len(updated.public_keys), 'node key')})"
    )
    click.echo(f"spread it: gossipmesh revocations push {list_path}")


def _own_certificate(path: Path, desc: NetworkDescription) -> NodeCertificate:
    certificate = load_certificate_file(path)
    if certificate.authority_public_key != desc.authority_public_key:
        raise UsageError(f"{path}: signed by another authority, not network {desc.name!r}'s")
    return certificate


TRUST_COMMANDS = [network, cert]
