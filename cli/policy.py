"""`gossipmesh policy check` and `policy sign`: the network policy, offline.

Both work on the policy file alone (docs/policy.md), with no daemon:
`check` validates it and runs its [[tests]]; `sign` does the same and, if
every test passes, signs it with the authority key into the file that
`policy push` spreads to the mesh.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import time
from pathlib import Path

import click

from gossipmesh.errors import ConfigError, GossipmeshError, KeyFileError
from gossipmesh.identity import Identity, encode_public_key
from gossipmesh.policy.check import failures, run_tests
from gossipmesh.policy.model import MAX_POLICY_BYTES, Policy, parse_policy
from gossipmesh.policy.signed import sign_policy

# TODO(lead): use gossipmesh.trust.authority.load_authority_key once it is merged,
# and drop _load_authority_key and AUTHORITY_KEY_HEADER below.
AUTHORITY_KEY_HEADER = "gossipmesh-authority-ed25519-seed-v1"
_MAX_KEY_FILE_SIZE = 4096


def _load_authority_key(path: Path) -> Identity:
    """The authority key file: its header line, then the base64 seed; private to its owner."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: authority key file does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open authority key file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open; "
                f"the authority key must be private to its owner (chmod 600 {path})"
            )
        data = os.read(fd, _MAX_KEY_FILE_SIZE + 1)
    finally:
        os.close(fd)
    lines = data.decode("ascii", "replace").splitlines()
    if len(data) > _MAX_KEY_FILE_SIZE or not lines or lines[0].strip() != AUTHORITY_KEY_HEADER:
        raise KeyFileError(
            f"{path}: not an authority key file (expected first line {AUTHORITY_KEY_HEADER!r})"
        )
    try:
        seed = base64.b64decode(lines[1].strip() if len(lines) > 1 else "", validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32 or any(line.strip() for line in lines[2:]):
        raise KeyFileError(f"{path}: authority key file is corrupt or truncated")
    return Identity.from_seed(seed)


def read_policy_file(path: Path) -> str:
    """The policy text; every failure names the file (ConfigError, exit 2)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: policy file does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a policy file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError(f"{path}: larger than the {MAX_POLICY_BYTES} bytes a policy may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: policy file is not UTF-8 text") from None


def _summary(path: Path, policy: Policy) -> str:
    return f"{path}: policy version {policy.version}, {len(policy.rules)} rules"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise GossipmeshError(f"{path}: cannot write: {exc.strerror}") from None


@click.group("policy")
def policy() -> None:
    """The network's default-deny policy: who may open flows to whom.

    \b
    Write it:  policy.toml (the format: docs/policy.md)
    Check it:  gossipmesh policy check policy.toml
    Sign it:   gossipmesh policy sign policy.toml --authority authority.key \\
                   --out policy.signed
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
    authority = _load_authority_key(authority_path)
    document = sign_policy(authority, text, int(time.time()), str(path))
    _write_atomically(out_path, document.encode())
    click.echo(f"{_summary(path, parsed)}, {len(parsed.tests)} tests passed")
    click.echo(f"wrote {out_path}, signed by {encode_public_key(authority.public_key)}")
