"""Who is admitted: in a network with an authority, only nodes with a valid certificate.

A node record carries its holder's certificate (node-record extension
`CERTIFICATE_EXTENSION`). The gate admits a record only when that
certificate is signed by the network's authority, is for the record's key,
is within its validity, is not revoked, and grants the name the record
claims. A refused record never reaches the directory, so its node gets no
session, no address and no name here. Revocation and expiry take admitted
nodes out again (`NodeCore` then tears their sessions down).

In a shared-secret-only network (no authority) every record is admitted,
and the claim rules of docs/addressing.md decide names and addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

from gossipmesh.directory import Prefix
from gossipmesh.records import NodeRecord, Record
from gossipmesh.trust.certificate import (
    CERTIFICATE_EXTENSION,
    MAX_CLOCK_SKEW,
    CertificateError,
    CertificateRefusal,
    NodeCertificate,
    decode_certificate,
)
from gossipmesh.trust.revocation import RevocationList

MAX_VERIFIED = 65_536
"""Certificates whose signature is remembered as verified (the set is emptied when full)."""


class TrustGate:
    """Admission of node records by certificate, and the certificates of admitted nodes."""

    def __init__(self, authority_public_key: bytes | None, own_certificate: bytes = b"") -> None:
        self.authority_public_key = authority_public_key
        self.own_certificate = decode_certificate(own_certificate) if own_certificate else None
        """This node's certificate (checked by `up` before the core exists)."""
        self.revocations = RevocationList(frozenset(), frozenset())
        self.certificates: dict[bytes, NodeCertificate] = {}
        """node id -> the certificate its admitted record carries."""
        self._verified: set[bytes] = set()
        """Encoded certificates already verified: the same bytes need no second signature check."""
        self.refused: dict[str, int] = {}
        """Records refused, by reason (`CertificateRefusal` values, plus missing and name)."""

    @property
    def open(self) -> bool:
        return self.authority_public_key is None

    def admit(self, record: NodeRecord, wall: float) -> bool:
        """True when `record` may enter the directory (its signature is checked elsewhere)."""
        certificate = self.check(record, wall)
        if certificate is None:
            return self.authority_public_key is None
        self.certificates[record.node_id] = certificate
        return True

    def admit_stored(self, record: Record, wall: float) -> bool:
        """For the DHT's storage: node records need a certificate, name records pass.

        A name record alone grants nothing: a name resolves only through the
        directory, whose node records the gate admitted (names granted).
        """
        return (
            not isinstance(record, NodeRecord) or self.open or self.check(record, wall) is not None
        )

    def check(self, record: NodeRecord, wall: float) -> NodeCertificate | None:
        """The record's certificate when it admits the record, else None (counted)."""
        authority = self.authority_public_key
        if authority is None:
            return None
        raw = dict(record.extensions).get(CERTIFICATE_EXTENSION)
        if raw is None:
            self._refuse("no_certificate")
            return None
        try:
            certificate = decode_certificate(raw)
            self._verify(certificate, raw, authority, record.public_key, wall)
        except CertificateError as exc:
            self._refuse(exc.reason.value)
            return None
        if record.name and not certificate.grants_name(record.name):
            self._refuse("name_not_granted")
            return None
        return certificate

    def _verify(
        self,
        certificate: NodeCertificate,
        raw: bytes,
        authority: bytes,
        node_key: bytes,
        wall: float,
    ) -> None:
        """`certificate.check`, with the signature verified once per certificate, not per record.

        A node's record is re-issued every few minutes with the same certificate;
        only its key, validity and revocation need checking again.
        """
        if raw in self._verified:
            if certificate.node_public_key != node_key:
                raise CertificateError(CertificateRefusal.WRONG_KEY)
            if self.revocations.revokes(certificate):
                raise CertificateError(CertificateRefusal.REVOKED)
            if wall + MAX_CLOCK_SKEW < certificate.not_before:
                raise CertificateError(CertificateRefusal.NOT_YET_VALID)
            if wall >= certificate.not_after:
                raise CertificateError(CertificateRefusal.EXPIRED)
            return
        certificate.check(authority, node_key, wall, self.revocations)
        if len(self._verified) >= MAX_VERIFIED:
            self._verified.clear()
        self._verified.add(raw)

    def approves_route(self, record: NodeRecord, prefix: Prefix) -> bool:
        """May this node route `prefix`? Open network: yes; else its certificate must grant it."""
        if self.authority_public_key is None:
            return True
        certificate = self.certificates.get(record.node_id)
        own = self.own_certificate
        if certificate is None and own is not None and own.node_public_key == record.public_key:
            certificate = own
        if certificate is None:
            return False
        if prefix.prefixlen == 0:  # an exit node's default route
            return certificate.exit_node
        return certificate.grants_route(prefix)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def groups(self, node_id: bytes) -> tuple[str, ...]:
        certificate = self.certificates.get(node_id)
        return () if certificate is None else certificate.groups

    def use_revocations(self, revocations: RevocationList) -> list[bytes]:
        """A newer verified revocation list: the admitted node ids it now excludes."""
        self.revocations = revocations
        return self._drop(
            node_id for node_id, cert in self.certificates.items() if self.revocations.revokes(cert)
        )

    def expired(self, wall: float) -> list[bytes]:
        """Admitted node ids whose certificate is no longer valid at `wall`."""
        return self._drop(
            node_id for node_id, cert in self.certificates.items() if cert.not_after <= wall
        )

    def forget(self, node_id: bytes) -> None:
        self.certificates.pop(node_id, None)

    def _drop(self, node_ids: Iterable[bytes]) -> list[bytes]:
        dropped = list(node_ids)
        for node_id in dropped:
            del self.certificates[node_id]
        return dropped
