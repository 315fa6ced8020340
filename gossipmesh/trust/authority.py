"""The network authority: its key file and the public description of its network.

The authority key is an Ed25519 key like a node's, in a file with its own
first line, so that neither kind can be used as the other by mistake. It is
kept offline and only comes out to sign certificates and documents.

`network.json` is what every node is given: the network's name, the
authority's public key and the IPv4 CIDR. It holds no secret. The authority
signs it over a canonical binary form (not the JSON text, which editors and
tools may reformat), so a copy changed on its way to a node is refused.
Signing only proves the file was not changed by someone without the key: the
operator still has to hand each node the right file, and can compare the
authority key `gossipmesh network init` printed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gossipmesh.addressing import DEFAULT_IPV4_NETWORK, parse_ipv4_network
from gossipmesh.errors import ConfigError, LabelError
from gossipmesh.identity import (
    AUTHORITY_KEY_FILE_HEADER,
    PUBLIC_KEY_SIZE,
    Identity,
    load_key_file,
    verify_signature,
    write_key_file,
)
from gossipmesh.names import normalize_label
from gossipmesh.statefiles import read_operator_file
from gossipmesh.trust.document import Signer

__all__ = [
    "AUTHORITY_KEY_FILE_HEADER",
    "NETWORK_FILE_FORMAT",
    "NetworkDescription",
    "encode_network_file",
    "load_authority_key",
    "load_network_authority",
    "load_network_file",
    "parse_network_file",
    "write_authority_key",
]

NETWORK_FILE_FORMAT: Final = "gossipmesh-network-v1"
"""The `format` member of network.json: what the file is and which layout it has."""
MAX_NETWORK_FILE_SIZE: Final = 16 * 1024
SIGNATURE_SIZE: Final = 64

_SIGNING_LABEL: Final = b"gossipmesh network description\x00"
_BODY = struct.Struct(">B32s4sBQ")
_BODY_FORMAT: Final = 1
_FIELDS: Final = frozenset(
    {"format", "name", "authority_public_key", "ipv4_network", "created_at", "signature"}
)
_SECRET_LABEL: Final = b"network-secret"
_SECRET_PERSON: Final = b"gossipmesh-trust"
_U64_MAX: Final = (1 << 64) - 1


def write_authority_key(path: str | os.PathLike[str], identity: Identity) -> None:
    """Create an authority key file (mode 0600); never overwrites (KeyFileError)."""
    write_key_file(path, identity, header=AUTHORITY_KEY_FILE_HEADER)


def load_authority_key(path: str | os.PathLike[str]) -> Identity:
    """Read an authority key file; a node key, a too-open or a corrupt file is a KeyFileError."""
    return load_key_file(path, header=AUTHORITY_KEY_FILE_HEADER)


@dataclass(frozen=True)
class NetworkDescription:
    """One mesh as every node knows it: public, signed by its authority."""

    name: str
    authority_public_key: bytes
    ipv4_network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK
    created_at: int = 0

    def signed_body(self) -> bytes:
        """The canonical bytes the authority signs (after a domain label)."""
        name = normalize_label(self.name)
        if name != self.name:
            raise LabelError(f"network name {self.name!r} must be normalized (lower case)")
        if len(self.authority_public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("the authority public key is 32 bytes")
        if not 0 <= self.created_at <= _U64_MAX:
            raise ValueError("created_at out of range")
        raw_name = name.encode("ascii")
        return (
            _BODY.pack(
                _BODY_FORMAT,
                self.authority_public_key,
                self.ipv4_network.network_address.packed,
                self.ipv4_network.prefixlen,
                self.created_at,
            )
            + bytes([len(raw_name)])
            + raw_name
        )

    @property
    def network_secret(self) -> bytes:
        """32 bytes for `membership.NetworkSecret(material)` when no secret file is given.

        Derived from the authority's public key, so every node of the network
        computes the same value with nothing more than network.json. It is
        therefore not secret from anyone holding that file: it keeps networks
        apart (their DHTs and sessions do not mix) and hides the DHT from
        outsiders, while membership itself comes from certificates.
        """
        return hashlib.blake2b(
            self.authority_public_key, digest_size=32, key=_SECRET_LABEL, person=_SECRET_PERSON
        ).digest()

    def signature_valid(self, signature: bytes) -> bool:
        return verify_signature(
            self.authority_public_key, _SIGNING_LABEL + self.signed_body(), signature
        )


def encode_network_file(desc: NetworkDescription, signer: Signer) -> bytes:
    """network.json's bytes: the description signed by `signer`, its own authority."""
    if signer.public_key != desc.authority_public_key:
        raise ValueError("a network description is signed by the authority it names")
    signature = signer.sign(_SIGNING_LABEL + desc.signed_body())
    document = {
        "format": NETWORK_FILE_FORMAT,
        "name": desc.name,
        "authority_public_key": base64.b64encode(desc.authority_public_key).decode("ascii"),
        "ipv4_network": str(desc.ipv4_network),
        "created_at": desc.created_at,
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode("ascii")


def parse_network_file(data: bytes, source: str = "network file") -> NetworkDescription:
    """Parse and verify network.json's bytes; anything else is a ConfigError naming `source`."""
    if len(data) > MAX_NETWORK_FILE_SIZE:
        raise ConfigError(f"{source}: too large to be a gossipmesh network file")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{source}: not a gossipmesh network file (not JSON: {exc})") from None
    if not isinstance(document, dict) or document.get("format") != NETWORK_FILE_FORMAT:
        raise ConfigError(
            f'{source}: not a gossipmesh network file (expected "format": '
            f"{NETWORK_FILE_FORMAT!r}; `gossipmesh network init` writes one)"
        )
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(map(repr, unknown))}")
    missing = sorted(_FIELDS - set(document))
    if missing:
        raise ConfigError(f"{source}: missing keys {', '.join(map(repr, missing))}")
    desc = NetworkDescription(
        name=_name(document["name"], source),
        authority_public_key=_base64(document, "authority_public_key", PUBLIC_KEY_SIZE, source),
        ipv4_network=_ipv4_network(document["ipv4_network"], source),
        created_at=_timestamp(document["created_at"], source),
    )
    signature = _base64(document, "signature", SIGNATURE_SIZE, source)
    if not desc.signature_valid(signature):
        raise ConfigError(
            f"{source}: the authority's signature does not match; the file was changed "
            "after it was signed (get a fresh copy from the network's operator)"
        )
    return desc


def load_network_file(path: str | os.PathLike[str]) -> NetworkDescription:
    """Read and verify network.json; a ConfigError names the path and what is wrong."""
    path = Path(path)
    data = read_operator_file(path, MAX_NETWORK_FILE_SIZE, "network file")
    return parse_network_file(data, source=str(path))


def load_network_authority(
    key_path: str | os.PathLike[str], network: NetworkDescription
) -> Identity:
    """The authority key at `key_path`, refused unless it is the one `network` names.

    Signing with another network's authority would give certificates that no
    node of this network accepts, so it is stopped here rather than found later.
    """
    authority = load_authority_key(key_path)
    if authority.public_key != network.authority_public_key:
        raise ConfigError(
            f"{key_path}: this is not the authority of network {network.name!r} "
            "(its public key differs from the one in the network file)"
        )
    return authority


def _name(value: Any, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f'{source}: "name" must be a string')
    try:
        name = normalize_label(value)
    except LabelError as exc:
        raise ConfigError(f'{source}: "name": {exc}') from None
    if name != value:
        raise ConfigError(f'{source}: "name" must be lower case ({name!r})')
    return name


def _base64(document: dict[str, Any], key: str, size: int, source: str) -> bytes:
    value = document[key]
    try:
        if not isinstance(value, str):
            raise ValueError
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: {key!r} must be base64 text") from None
    if len(raw) != size:
        raise ConfigError(f"{source}: {key!r} must decode to {size} bytes, got {len(raw)}")
    return raw


def _ipv4_network(value: Any, source: str) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise ConfigError(f'{source}: "ipv4_network" must be a string such as 100.64.0.0/10')
    try:
        return parse_ipv4_network(value)
    except ValueError as exc:
        raise ConfigError(f'{source}: "ipv4_network": {exc}') from None


def _timestamp(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise ConfigError(f'{source}: "created_at" must be a non-negative integer (Unix time)')
    return value
