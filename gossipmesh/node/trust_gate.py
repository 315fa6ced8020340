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

from gossipmesh.records import NodeRecord
from gossipmesh.trust.certificate import (
    CERTIFICATE_EXTENSION,
    CertificateError,
    NodeCertificate,
    decode_certificate,
)
from gossipmesh.trust.document import SignedDocument
from gossipmesh.trust.revocation import RevocationList, decode_revocations


class TrustGate:
    """Admission of node records by certificate, and the certificates of admitted nodes."""

    def __init__(self, authority_public_key: bytes | None) -> None:
        self.authority_public_key = authority_public_key
        self.revocations = RevocationList(frozenset(), frozenset())
        self.certificates: dict[bytes, NodeCertificate] = {}
        """node id -> the certificate its admitted record carries."""
        self.refused: dict[str, int] = {}
        """Records refused, by reason (`CertificateRefusal` values, plus missing and name)."""

    @property
    def open(self) -> bool:
        return self.authority_public_key is None

    def admit(self, record: NodeRecord, wall: float) -> bool:
        """True when `record` may enter the directory (its signature is checked elsewhere)."""
        authority = self.authority_public_key
        if authority is None:
            return True
        certificate = self._certificate_in(record)
        if certificate is None:
            return False
        try:
            certificate.check(authority, record.public_key, wall)
        except CertificateError as exc:
            self._refuse(exc.reason.value)
            return False
        if self.revocations.revokes(certificate):
            self._refuse("revoked")
            return False
        if record.name and not certificate.grants_name(record.name):
            self._refuse("name_not_granted")
            return False
        self.certificates[record.node_id] = certificate
        return True

    def _certificate_in(self, record: NodeRecord) -> NodeCertificate | None:
        value = dict(record.extensions).get(CERTIFICATE_EXTENSION)
        if value is None:
            self._refuse("no_certificate")
            return None
        try:
            return decode_certificate(value)
        except CertificateError as exc:
            self._refuse(exc.reason.value)
            return None

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def groups(self, node_id: bytes) -> tuple[str, ...]:
        certificate = self.certificates.get(node_id)
        return () if certificate is None else certificate.groups

    def use_revocations(self, document: SignedDocument) -> list[bytes]:
        """A newer verified revocation list: the admitted node ids it now excludes."""
        self.revocations = decode_revocations(document.payload)
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
