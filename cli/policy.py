"""`gossipmesh policy check` and `policy sign`: the network policy, offline.

Both work on the policy file alone (docs/policy.md), with no daemon:
`check` validates it and runs its [[tests]]; `sign` does the same and, if
every test passes, signs it with the authority key into the file that
`policy push` spreads to the mesh.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from gossipmesh.cli.documents import policy_push, policy_show
from gossipmesh.errors import ConfigError, GossipmeshError
from gossipmesh.identity import encode_public_key
from gossipmesh.policy.check import failures, run_tests
from gossipmesh.policy.model import MAX_POLICY_BYTES, Policy, parse_policy
from gossipmesh.policy.signed import sign_policy
from gossipmesh.statefiles import StateError, read_operator_file, write_atomically
from gossipmesh.trust.authority import load_authority_key


def read_policy_file(path: Path) -> str:
    """The policy text; every failure names the file (ConfigError, exit 2)."""
    data = read_operator_file(path, MAX_POLICY_BYTES, "policy file")
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError(f"{path}: larger than the {MAX_POLICY_BYTES} bytes a policy may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: policy file is not UTF-8 text") from None


def _summary(path: Path, policy: Policy) -> str:
    return f"{path}: policy version {policy.version}, {len(policy.rules)} rules"


@click.group("policy")
def policy() -> None:
    """The network's default-deny policy: who may open flows to whom.

    \b
    Write it:  policy.toml (the format: docs/policy.md)
    Check it:  gossipmesh policy check policy.toml
    Sign it:   gossipmesh policy sign policy.toml --authority authority.key \\
                   --out policy.signed
    Spread it: gossipmesh policy push policy.signed   (on any member)
    See it:    gossipmesh policy show
    """


@policy.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def check(path: Path) -> None:
    """Validate the policy file PATH offline and run its [[tests]].

    Prints each test's outcome and the rule that decided it. Exits 1 when a
    test fails, 2 when the file is not a valid policy.
    """
    parsed = parse_policy(read_policy_file(path), str(path))
    results = run_tests(parsed)
    for result in results:
        click.echo(result.describe())
    failed = failures(results)
    click.echo(f"{_summary(path, parsed)}, {len(results)} tests, {len(failed)} failed")
    if failed:
        raise GossipmeshError(f"{path}: {len(failed)} of {len(results)} tests fail")


@policy.command("sign")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--authority",
    "authority_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The network authority's key file.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the signed policy (replaced if it exists).",
)
def sign(path: Path, authority_path: Path, out_path: Path) -> None:
    """Sign the policy file PATH with the authority key, if it is valid and its tests pass.

    The signed file's version is the policy's `version`; nodes take only a
    newer one. Spread it with `gossipmesh policy push`.
    """
    text = read_policy_file(path)
    parsed = parse_policy(text, str(path))  # before the key: a bad file needs no secret
    authority = load_authority_key(authority_path)
    document = sign_policy(authority, text, int(time.time()), str(path))
    try:
        write_atomically(out_path, document.encode(), mode=0o644)
    except StateError as exc:
        raise GossipmeshError(str(exc)) from None
    click.echo(f"{_summary(path, parsed)}, {len(parsed.tests)} tests passed")
    click.echo(f"wrote {out_path}, signed by {encode_public_key(authority.public_key)}")


policy.add_command(policy_push)
policy.add_command(policy_show)
