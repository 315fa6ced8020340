"""The network secret: holding it is membership.

One secret keys three things, each through its own labelled derivation so
that no derived key reveals another: the WireGuard preshared key of every
session, the AEAD key that seals DHT datagrams, and the public network id.
Without a secret the network is open: the preshared key is all zeros (plain
WireGuard) and the DHT key is a fixed public value.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from gossipmesh.errors import ConfigError

MIN_SECRET_BYTES = 16
MAX_SECRET_FILE_SIZE = 4096
_SCRYPT_SALT = b"gossipmesh network passphrase v1"


def _derive(label: bytes, material: bytes) -> bytes:
    return hashlib.blake2b(material, digest_size=32, key=label, person=b"gossipmesh-net").digest()


@dataclass(frozen=True)
class NetworkSecret:
    """The secret material of one mesh (None for an open network)."""

    material: bytes | None

    @classmethod
    def open_network(cls) -> NetworkSecret:
        return cls(None)

    @classmethod
    def from_passphrase(cls, passphrase: str) -> NetworkSecret:
        """Stretch a passphrase with scrypt so that guessing it offline is slow."""
        if len(passphrase) < 8:
            raise ConfigError("network passphrase: use at least 8 characters")
        stretched = hashlib.scrypt(
            passphrase.encode("utf-8"), salt=_SCRYPT_SALT, n=1 << 14, r=8, p=1, dklen=32
        )
        return cls(stretched)

    @classmethod
    def from_file(cls, path: Path) -> NetworkSecret:
        """Read a secret file: its bytes (stripped of surrounding whitespace) are the secret.

        Like a key file, it must not be readable by group or others.
        """
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise ConfigError(f"{path}: network secret file does not exist") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read network secret: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a directory, not a network secret file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open for a "
                f"network secret (chmod 600 {path})"
            )
        try:
            data = path.read_bytes()[: MAX_SECRET_FILE_SIZE + 1]
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read network secret: {exc.strerror}") from None
        if len(data) > MAX_SECRET_FILE_SIZE:
            raise ConfigError(f"{path}: network secret file is larger than 4 KiB")
        data = data.strip()
        if len(data) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{path}: network secret is shorter than {MIN_SECRET_BYTES} bytes; "
                "generate one with `head -c 32 /dev/urandom | base64 > FILE`"
            )
        return cls(data)

    @property
    def session_psk(self) -> bytes:
        """The WireGuard preshared key for every session in this network."""
        if self.material is None:
            return bytes(32)
        return _derive(b"session-psk", self.material)

    @property
    def dht_key(self) -> bytes:
        """The ChaCha20-Poly1305 key that seals DHT datagrams."""
        return _derive(b"dht-seal", self.material if self.material is not None else b"open")

    @property
    def network_id(self) -> bytes:
        """A public 8-byte id of the network, safe to show and log."""
        material = self.material if self.material is not None else b"open"
        return _derive(b"network-id", material)[:8]
