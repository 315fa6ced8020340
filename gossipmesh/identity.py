"""Node identity: the key file, the keys derived from it and the node id.

One Ed25519 signing key per node signs records; the X25519 static key used by
WireGuard sessions is derived from it (libsodium's Ed25519->Curve25519 map),
so a peer's session key follows from its signed public key alone.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from gossipmesh.errors import KeyFileError

KEY_FILE_HEADER = "gossipmesh-ed25519-seed-v1"
"""First line of a node key file; the second is the base64 of the 32-byte seed."""
AUTHORITY_KEY_FILE_HEADER = "gossipmesh-authority-ed25519-seed-v1"
"""First line of a network authority key file (gossipmesh/trust/authority.py).

Both kinds hold an Ed25519 seed; the distinct header is what keeps a node
from running with the authority key, or the authority signing with a node key.
"""
_KEY_KINDS = {KEY_FILE_HEADER: "node key", AUTHORITY_KEY_FILE_HEADER: "network authority key"}
_WRONG_KIND_HINTS = {
    KEY_FILE_HEADER: "; a node runs with its own key (gossipmesh keygen), "
    "and the authority key stays offline",
    AUTHORITY_KEY_FILE_HEADER: "; `gossipmesh network init` creates the authority key",
}

PUBLIC_KEY_SIZE = 32
NODE_ID_SIZE = 20
"""Node ids are 160 bits, Kademlia's id size (and what the `kademlia` package requires)."""

MAX_KEY_FILE_SIZE = 4096


def node_id_from_public_key(public_key: bytes) -> bytes:
    """The 160-bit node id of an Ed25519 public key."""
    _check_public_key(public_key)
    return hashlib.blake2b(public_key, digest_size=NODE_ID_SIZE, person=b"gossipmesh-id").digest()


def x25519_public_from_ed25519(public_key: bytes) -> bytes:
    """The X25519 session public key that belongs to an Ed25519 public key."""
    _check_public_key(public_key)
    try:
        verify_key = nacl.signing.VerifyKey(public_key)
        return bytes(verify_key.to_curve25519_public_key())
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise ValueError("not a valid Ed25519 public key") from exc


def _check_public_key(public_key: bytes) -> None:
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"a public key is {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")


def encode_public_key(public_key: bytes) -> str:
    """Standard base64, the form WireGuard tools use for keys."""
    return base64.b64encode(public_key).decode("ascii")


def decode_public_key(text: str) -> bytes:
    """Parse a base64 Ed25519 public key, as printed by `gossipmesh addr`."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key is not valid base64") from exc
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"public key must decode to {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Identity:
    """A node's private identity: everything derived from its key file."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def public_key(self) -> bytes:
        """The Ed25519 public key: what records are signed with and peers know us by."""
        return bytes(self.signing_key.verify_key)

    @property
    def node_id(self) -> bytes:
        return node_id_from_public_key(self.public_key)

    @property
    def x25519_private_key(self) -> bytes:
        """The WireGuard static private key (already clamped by libsodium)."""
        return bytes(self.signing_key.to_curve25519_private_key())

    @property
    def x25519_public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key.to_curve25519_public_key())

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature."""
        return bytes(self.signing_key.sign(message).signature)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


# --- key files -------------------------------------------------------------


def encode_key_file(identity: Identity, header: str = KEY_FILE_HEADER) -> bytes:
    seed_b64 = base64.b64encode(identity.seed).decode("ascii")
    return f"{header}\n{seed_b64}\n".encode("ascii")


def _wrong_header(source: str, found: str, header: str) -> KeyFileError:
    """Name the kind of key given when it is a known one: the likeliest mistake."""
    wanted = _KEY_KINDS.get(header, "key")
    if found in _KEY_KINDS and found != header:
        hint = _WRONG_KIND_HINTS.get(header, "")
        return KeyFileError(f"{source}: this is a {_KEY_KINDS[found]}, not a {wanted}{hint}")
    kind = "key file" if header == KEY_FILE_HEADER else f"{wanted} file"
    return KeyFileError(f"{source}: not a gossipmesh {kind} (expected first line {header!r})")


def parse_key_file(
    data: bytes, source: str = "key file", header: str = KEY_FILE_HEADER
) -> Identity:
    """Parse key-file bytes. Any input gives an Identity or a KeyFileError.

    `header` picks the kind of key expected; a key of another known kind is
    refused with a message naming what it is.
    """
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyFileError(f"{source}: too large to be a gossipmesh key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{source}: not a gossipmesh key file (not ASCII text)") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != header:
        raise _wrong_header(source, lines[0].strip() if lines else "", header)
    if len(lines) < 2 or not lines[1].strip():
        raise KeyFileError(f"{source}: key file is truncated (no key after the header)")
    if any(line.strip() for line in lines[2:]):
        raise KeyFileError(f"{source}: key file has unexpected content after the key")
    try:
        seed = base64.b64decode(lines[1].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(
            f"{source}: key file is corrupt or truncated (key is not valid base64)"
        ) from None
    if len(seed) != 32:
        raise KeyFileError(
            f"{source}: key file is corrupt or truncated (key is {len(seed)} bytes, expected 32)"
        )
    return Identity.from_seed(seed)


def load_key_file(path: str | os.PathLike[str], header: str = KEY_FILE_HEADER) -> Identity:
    """Read a key file, refusing the unsafe cases as ssh does.

    A key readable or writable by group or others is refused, because anyone
    who can read it can impersonate the node and decrypt its sessions.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a directory, not a key file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(f"{path}: key file is a symbolic link; refusing it") from None
        raise KeyFileError(f"{path}: cannot open key file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise KeyFileError(f"{path}: is a directory, not a key file")
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open; "
                f"the key must be private to its owner (chmod 600 {path})"
            )
        try:
            data = os.read(fd, MAX_KEY_FILE_SIZE + 1)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    finally:
        os.close(fd)
    return parse_key_file(data, source=str(path), header=header)


def write_key_file(
    path: str | os.PathLike[str], identity: Identity, header: str = KEY_FILE_HEADER
) -> None:
    """Create a key file with mode 0600; never overwrite an existing file.

    The data is written to the final name with O_EXCL and fsynced; on a failed
    write (a full disk) the partial file is removed so nothing corrupt remains.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        data = encode_key_file(identity, header)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise KeyFileError(f"{path}: cannot write key file: {exc.strerror}") from None
    os.close(fd)


def load_or_create_key_file(path: str | os.PathLike[str]) -> tuple[Identity, bool]:
    """What `gossipmesh up --key` does: load the key, or create it if missing.

    Returns the identity and whether it was created now.
    """
    path = Path(path)
    if not os.path.lexists(path):
        identity = Identity.generate()
        try:
            write_key_file(path, identity)
        except KeyFileError:
            if not os.path.lexists(path):
                raise
            # Another process created it between our checks: use theirs.
            return load_key_file(path), False
        return identity, True
    return load_key_file(path), False
