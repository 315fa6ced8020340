"""Node certificates: the authority's word on who a node key is and what it may claim.

A certificate binds a node's Ed25519 public key to a name, groups, a fixed
IPv4, routed prefixes and the exit-node right, for a bounded time. It travels
inside the node's own record (extension `CERTIFICATE_EXTENSION`), so peers
check it without asking anyone; the operator keeps it as a text file.

Encoding (big-endian; the signature covers a domain label and every byte
before it; one encoding per value, so decode(encode(c)) == c byte for byte):

    u8 format=1  32s authority_public_key  32s node_public_key  u64 serial
    u64 not_before  u64 not_after  u8 flags (bit 0 exit node, bit 1 has ipv4)
    u8 name_length  name  u8 group_count  { u8 length  group }*  (sorted, unique)
    [4s ipv4]  u8 route_count  { u8 family (4|6)  u8 prefix_length  4s|16s }*  (sorted)
    64s signature

Unknown flag bits and formats are refused, not kept: a certificate is a grant,
and a node must never accept one whose limits it cannot read.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from gossipmesh.errors import ConfigError, GossipmeshError, LabelError
from gossipmesh.identity import PUBLIC_KEY_SIZE, node_id_from_public_key, verify_signature
from gossipmesh.names import MAX_LABEL_LENGTH, check_claimable, is_valid_label
from gossipmesh.statefiles import read_operator_file
from gossipmesh.trust.document import Signer

CERTIFICATE_EXTENSION: Final = 2
"""The node-record extension type that carries the certificate (1 is routed prefixes)."""
CERTIFICATE_FORMAT: Final = 1
MAX_CERTIFICATE_SIZE: Final = 512
"""Largest encoding: leaves most of a 1 KiB node record for endpoints and the rest."""
MAX_GROUPS: Final = 16
MAX_ROUTES: Final = 16
MAX_CLOCK_SKEW: Final = 300
"""Seconds a certificate is accepted before its not_before: a node whose clock is
a little behind the authority's must not refuse a certificate signed just now.
No skew is allowed on not_after: expiry is the authority's deadline."""
SIGNATURE_SIZE: Final = 64
MAX_CERTIFICATE_FILE_SIZE: Final = 8 * 1024

ARMOR_BEGIN: Final = "-----BEGIN GOSSIPMESH CERTIFICATE-----"
ARMOR_END: Final = "-----END GOSSIPMESH CERTIFICATE-----"

FLAG_EXIT_NODE: Final = 0x01
FLAG_IPV4: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_EXIT_NODE | FLAG_IPV4

_SIGNING_LABEL: Final = b"gossipmesh node certificate\x00"
_HEADER = struct.Struct(">B32s32sQQQB")
_U64_MAX: Final = (1 << 64) - 1

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


class CertificateRefusal(StrEnum):
    """Why a certificate was refused; counters and logs use these names."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    WRONG_AUTHORITY = "wrong_authority"
    WRONG_KEY = "wrong_key"
    """The certificate is for another node key than the one presenting it."""
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


class CertificateError(GossipmeshError):
    """A certificate that cannot be used; `reason` says why."""

    def __init__(self, reason: CertificateRefusal, detail: str = "") -> None:
        super().__init__(
            f"certificate refused: {reason.value}" + (f" ({detail})" if detail else "")
        )
        self.reason = reason
        self.detail = detail


class Revoker(Protocol):
    """What `check` asks about revocation (a `revocation.RevocationList`)."""

    def revokes(self, cert: NodeCertificate) -> bool: ...


def _route_order(prefix: Prefix) -> tuple[int, int, int]:
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


@dataclass(frozen=True)
class NodeCertificate:
    authority_public_key: bytes
    node_public_key: bytes
    serial: int
    name: str
    """The human name granted ("" for none), normalized."""
    groups: tuple[str, ...]
    ipv4: ipaddress.IPv4Address | None
    routes: tuple[Prefix, ...]
    exit_node: bool
    not_before: int
    not_after: int
    signature: bytes = field(default=bytes(SIGNATURE_SIZE), repr=False)

    def signed_body(self) -> bytes:
        """Every encoded byte before the signature; MALFORMED when a field breaks a rule."""
        self._check_fields()
        flags = (FLAG_EXIT_NODE if self.exit_node else 0) | (
            FLAG_IPV4 if self.ipv4 is not None else 0
        )
        parts = [
            _HEADER.pack(
                CERTIFICATE_FORMAT,
                self.authority_public_key,
                self.node_public_key,
                self.serial,
                self.not_before,
                self.not_after,
                flags,
            ),
            _short(self.name.encode("ascii")),
            bytes([len(self.groups)]),
            *(_short(group.encode("ascii")) for group in self.groups),
            self.ipv4.packed if self.ipv4 is not None else b"",
            bytes([len(self.routes)]),
            *(
                bytes([route.version, route.prefixlen]) + route.network_address.packed
                for route in self.routes
            ),
        ]
        return b"".join(parts)

    def _check_fields(self) -> None:
        if len(self.authority_public_key) != PUBLIC_KEY_SIZE:
            raise _malformed("authority public key must be 32 bytes")
        if len(self.node_public_key) != PUBLIC_KEY_SIZE:
            raise _malformed("node public key must be 32 bytes")
        for value in (self.serial, self.not_before, self.not_after):
            if isinstance(value, bool) or not 0 <= value <= _U64_MAX:
                raise _malformed("serial or validity out of range")
        if self.not_after <= self.not_before:
            raise _malformed("not_after must be after not_before")
        try:
            if self.name and _normalized_name(self.name, self.node_public_key) != self.name:
                raise _malformed("name must be normalized (lower case)")
            if any(normalize_group(group) != group for group in self.groups):
                raise _malformed("groups must be normalized (lower case)")
        except LabelError as exc:
            raise _malformed(str(exc)) from None
        if len(self.groups) > MAX_GROUPS:
            raise _malformed(f"more than {MAX_GROUPS} groups")
        if list(self.groups) != sorted(set(self.groups)):
            raise _malformed("groups must be sorted and unique")
        if self.ipv4 is not None and not isinstance(self.ipv4, ipaddress.IPv4Address):
            raise _malformed("ipv4 must be an IPv4 address")
        if len(self.routes) > MAX_ROUTES:
            raise _malformed(f"more than {MAX_ROUTES} routes")
        if not all(
            isinstance(r, ipaddress.IPv4Network | ipaddress.IPv6Network) for r in self.routes
        ):
            raise _malformed("routes must be IP networks")
        orders = [_route_order(route) for route in self.routes]
        if orders != sorted(set(orders)):
            raise _malformed("routes must be sorted and unique")

    def encode(self) -> bytes:
        if len(self.signature) != SIGNATURE_SIZE:
            raise _malformed("signature must be 64 bytes")
        data = self.signed_body() + self.signature
        if len(data) > MAX_CERTIFICATE_SIZE:
            raise _malformed(
                f"{len(data)} bytes is over {MAX_CERTIFICATE_SIZE}; grant fewer groups or routes"
            )
        return data

    def signed_by(self, authority: Signer) -> NodeCertificate:
        """This certificate signed by `authority`, which must be the one it names."""
        if authority.public_key != self.authority_public_key:
            raise ValueError("a certificate is signed by the authority it names")
        signed = replace(self, signature=authority.sign(_SIGNING_LABEL + self.signed_body()))
        signed.encode()  # the size bound, before anyone is handed it
        return signed

    def signature_valid(self) -> bool:
        """Whether the signature is the named authority's (says nothing about which one)."""
        return verify_signature(
            self.authority_public_key, _SIGNING_LABEL + self.signed_body(), self.signature
        )

    def check(
        self,
        authority_public_key: bytes,
        node_public_key: bytes,
        now: float,
        revocations: Revoker | None = None,
    ) -> None:
        """Raise CertificateError unless this certifies `node_public_key` now.

        In order: structure, the network's authority, its signature, the node
        key, revocation, then time (`now` is Unix seconds; not_before may be
        up to MAX_CLOCK_SKEW ahead, not_after is exact).
        """
        self.encode()
        if self.authority_public_key != authority_public_key:
            raise CertificateError(
                CertificateRefusal.WRONG_AUTHORITY, "signed by another network's authority"
            )
        if not self.signature_valid():
            raise CertificateError(CertificateRefusal.BAD_SIGNATURE)
        if self.node_public_key != node_public_key:
            raise CertificateError(CertificateRefusal.WRONG_KEY, "issued to another node key")
        if revocations is not None and revocations.revokes(self):
            raise CertificateError(CertificateRefusal.REVOKED, f"serial {self.serial}")
        if now + MAX_CLOCK_SKEW < self.not_before:
            raise CertificateError(
                CertificateRefusal.NOT_YET_VALID, f"valid from {self.not_before}, now {int(now)}"
            )
        if now >= self.not_after:
            raise CertificateError(
                CertificateRefusal.EXPIRED, f"valid until {self.not_after}, now {int(now)}"
            )

    def grants_name(self, name: str) -> bool:
        """Whether this certificate grants the human name `name` (any case)."""
        return bool(self.name) and name.lower() == self.name

    def grants_ipv4(self, address: ipaddress.IPv4Address) -> bool:
        return self.ipv4 is not None and address == self.ipv4

    def grants_route(self, prefix: Prefix) -> bool:
        """Whether `prefix` lies inside one of the granted routes (of its family)."""
        return any(
            prefix.version == route.version and prefix.subnet_of(route)  # type: ignore[arg-type]
            for route in self.routes
        )


def normalize_group(group: str) -> str:
    """A group name, lower-cased: a token like a DNS label, so policies can name it plainly."""
    if not isinstance(group, str) or not is_valid_label(group):
        raise LabelError(
            f"group {group!r}: use letters, digits and hyphens (at most "
            f"{MAX_LABEL_LENGTH}), starting and ending with a letter or digit"
        )
    return group.lower()


def _normalized_name(name: str, node_public_key: bytes) -> str:
    """A granted name; another key's key-derived name is never grantable."""
    return check_claimable(name, node_id_from_public_key(node_public_key))


def _malformed(detail: str) -> CertificateError:
    return CertificateError(CertificateRefusal.MALFORMED, detail)


def _short(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def sign_certificate(
    authority: Signer,
    node_public_key: bytes,
    name: str,
    groups: Iterable[str],
    ipv4: ipaddress.IPv4Address | None,
    routes: Iterable[Prefix],
    exit_node: bool,
    not_before: int,
    not_after: int,
    serial: int | None = None,
) -> NodeCertificate:
    """A new certificate from operator input: names normalized, groups and routes sorted.

    Bad labels raise LabelError; limits (counts, size, validity) CertificateError.
    The serial is random unless given, so two authorities' serials do not clash
    and a serial reveals nothing about how many certificates were issued.
    """
    if len(node_public_key) != PUBLIC_KEY_SIZE:
        raise _malformed("node public key must be 32 bytes")
    return NodeCertificate(
        authority_public_key=authority.public_key,
        node_public_key=node_public_key,
        serial=secrets.randbelow(_U64_MAX) + 1 if serial is None else serial,
        name=_normalized_name(name, node_public_key) if name else "",
        groups=tuple(sorted({normalize_group(group) for group in groups})),
        ipv4=ipv4,
        routes=tuple(sorted(set(routes), key=_route_order)),
        exit_node=exit_node,
        not_before=not_before,
        not_after=not_after,
    ).signed_by(authority)


# --- decoding ----------------------------------------------------------------


class _Reader:
    """Bounds-checked cursor: running off the end is MALFORMED, never IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise _malformed("truncated")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def text(self) -> str:
        try:
            return self.take(self.u8()).decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("name or group is not ASCII") from None

    def route(self) -> Prefix:
        family, length = self.u8(), self.u8()
        if family not in (4, 6):
            raise _malformed("route family must be 4 or 6")
        raw = self.take(4 if family == 4 else 16)
        try:
            return ipaddress.ip_network((raw, length), strict=True)
        except ValueError:
            raise _malformed("route prefix is not a network") from None


def decode_certificate(data: bytes) -> NodeCertificate:
    """Parse (not verify) a certificate; any bytes give one or a MALFORMED CertificateError."""
    if not isinstance(data, bytes | bytearray):
        raise _malformed("a certificate is bytes")
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise _malformed(f"{len(data)} > {MAX_CERTIFICATE_SIZE} bytes")
    data = bytes(data)
    if data[:1] != bytes([CERTIFICATE_FORMAT]):
        raise _malformed(f"unknown format {data[0] if data else 'none'}")
    reader = _Reader(data)
    _, authority, node, serial, not_before, not_after, flags = _HEADER.unpack(
        reader.take(_HEADER.size)
    )
    if flags & ~_KNOWN_FLAGS:
        raise _malformed(f"unknown flags {flags:#04x}")
    name = reader.text()
    groups = tuple(reader.text() for _ in range(reader.u8()))
    ipv4 = ipaddress.IPv4Address(reader.take(4)) if flags & FLAG_IPV4 else None
    routes = tuple(reader.route() for _ in range(reader.u8()))
    signature = reader.take(SIGNATURE_SIZE)
    if reader.offset != len(data):
        raise _malformed("trailing bytes")
    cert = NodeCertificate(
        authority_public_key=authority,
        node_public_key=node,
        serial=serial,
        name=name,
        groups=groups,
        ipv4=ipv4,
        routes=routes,
        exit_node=bool(flags & FLAG_EXIT_NODE),
        not_before=not_before,
        not_after=not_after,
        signature=signature,
    )
    if cert.encode() != data:
        raise _malformed("not canonically encoded")
    return cert


# --- the certificate file (--cert FILE) ------------------------------------------


def encode_certificate_file(cert: NodeCertificate) -> bytes:
    """The armored text form: base64 between BEGIN/END lines, 64 characters a line."""
    text = base64.b64encode(cert.encode()).decode("ascii")
    lines = [ARMOR_BEGIN, *(text[i : i + 64] for i in range(0, len(text), 64)), ARMOR_END]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_certificate_file(data: bytes, source: str = "certificate file") -> NodeCertificate:
    """Parse a certificate file; a ConfigError names `source` and the problem.

    Text outside the BEGIN/END lines is ignored (room for a comment). The
    signature is checked against the authority the certificate names, so a
    damaged copy is caught here; whether that is the network's authority is
    for `NodeCertificate.check`.
    """
    if len(data) > MAX_CERTIFICATE_FILE_SIZE:
        raise ConfigError(f"{source}: too large to be a gossipmesh certificate")
    try:
        lines = [line.strip() for line in data.decode("ascii").splitlines()]
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a gossipmesh certificate (not ASCII text)") from None
    if lines.count(ARMOR_BEGIN) != 1 or lines.count(ARMOR_END) != 1:
        raise ConfigError(
            f"{source}: not a gossipmesh certificate (expected one {ARMOR_BEGIN!r} "
            f"... {ARMOR_END!r} block; `gossipmesh cert sign` writes one)"
        )
    begin, end = lines.index(ARMOR_BEGIN), lines.index(ARMOR_END)
    if end < begin:
        raise ConfigError(f"{source}: certificate END line comes before its BEGIN line")
    try:
        raw = base64.b64decode("".join(lines[begin + 1 : end]), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: certificate is corrupt (not valid base64)") from None
    try:
        cert = decode_certificate(raw)
    except CertificateError as exc:
        raise ConfigError(f"{source}: certificate is corrupt ({exc.detail})") from None
    if not cert.signature_valid():
        raise ConfigError(
            f"{source}: certificate's signature does not match; it was damaged or altered"
        )
    return cert


def load_certificate_file(path: str | os.PathLike[str]) -> NodeCertificate:
    """Read and parse a certificate file (ConfigError naming the path)."""
    path = Path(path)
    data = read_operator_file(path, MAX_CERTIFICATE_FILE_SIZE, "certificate file")
    return parse_certificate_file(data, source=str(path))
