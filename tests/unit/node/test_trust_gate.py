"""The trust gate alone: what it admits, and that its verification cache cannot be abused."""

from __future__ import annotations

import dataclasses
import ipaddress

from gossipmesh.identity import Identity
from gossipmesh.node.trust_gate import TrustGate
from gossipmesh.records import NameRecord, NodeRecord
from gossipmesh.trust.certificate import CERTIFICATE_EXTENSION, NodeCertificate, sign_certificate
from gossipmesh.trust.revocation import RevocationList

AUTHORITY = Identity.from_seed(b"A" * 32)
NODE = Identity.from_seed(b"n" * 32)
OTHER = Identity.from_seed(b"o" * 32)
NOW = 1_800_000_000


def _cert(node: Identity = NODE, **changes: object) -> NodeCertificate:
    cert = sign_certificate(
        AUTHORITY, node.public_key, "alpha", ["dev"], None, (), False, NOW - 60, NOW + 3600
    )
    return dataclasses.replace(cert, **changes) if changes else cert  # type: ignore[arg-type]


def _record(cert: NodeCertificate | None, node: Identity = NODE, name: str = "alpha") -> NodeRecord:
    extensions = () if cert is None else ((CERTIFICATE_EXTENSION, cert.encode()),)
    return NodeRecord(
        public_key=node.public_key,
        sequence=1,
        issued_at=NOW,
        expires_at=NOW + 600,
        name=name,
        name_claimed_since=NOW if name else 0,
        extensions=extensions,
    ).signed(node)


def test_admits_a_certified_record_and_remembers_its_groups() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    assert gate.admit(_record(_cert()), NOW)
    assert gate.groups(NODE.node_id) == ("dev",)


def test_a_widened_certificate_with_the_original_signature_is_refused_after_caching() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    good = _cert()
    assert gate.admit(_record(good), NOW)  # verified once: now in the cache
    widened = dataclasses.replace(good, groups=("admin", "dev"))
    assert not gate.admit(_record(widened), NOW)
    assert gate.refused == {"bad_signature": 1}


def test_a_cached_certificate_is_still_checked_for_key_time_and_revocation() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    good = _cert()
    assert gate.admit(_record(good), NOW)
    assert not gate.admit(_record(good, node=OTHER), NOW)  # someone else's certificate
    assert not gate.admit(_record(good), NOW + 3600)
    gate.revocations = RevocationList(serials=frozenset({good.serial}))
    assert not gate.admit(_record(good), NOW)
    assert gate.refused == {"wrong_key": 1, "expired": 1, "revoked": 1}


def test_no_certificate_a_foreign_one_or_an_ungranted_name_is_refused() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    rogue = Identity.from_seed(b"R" * 32)
    foreign = sign_certificate(
        rogue, NODE.public_key, "alpha", [], None, (), False, NOW - 60, NOW + 3600
    )
    assert not gate.admit(_record(None), NOW)
    assert not gate.admit(_record(foreign), NOW)
    assert not gate.admit(_record(_cert(), name="beta"), NOW)
    assert gate.refused == {"no_certificate": 1, "wrong_authority": 1, "name_not_granted": 1}
    assert NODE.node_id not in gate.certificates


def test_revocations_and_expiry_name_the_admitted_nodes_to_exclude() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    assert gate.admit(_record(_cert()), NOW)
    assert gate.expired(NOW) == []
    revoked = RevocationList(public_keys=frozenset({NODE.public_key}))
    assert gate.use_revocations(revoked) == [NODE.node_id]
    assert gate.groups(NODE.node_id) == ()


def test_the_dht_storage_takes_name_records_but_only_certified_node_records() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    name = NameRecord(
        name="alpha", public_key=NODE.public_key, claimed_since=NOW, sequence=1,
        issued_at=NOW, expires_at=NOW + 600,
    ).signed(NODE)  # fmt: skip
    assert gate.admit_stored(name, NOW)
    assert not gate.admit_stored(_record(None), NOW)
    assert gate.admit_stored(_record(_cert()), NOW)
    assert NODE.node_id not in gate.certificates  # storing is not admitting


def test_an_open_network_admits_everything() -> None:
    gate = TrustGate(None)
    assert gate.admit(_record(None), NOW)
    assert gate.admit_stored(_record(None), NOW)


def test_a_routed_subnet_needs_the_certificate_to_grant_it() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    lan = ipaddress.ip_network("10.1.0.0/24")
    router_cert = sign_certificate(
        AUTHORITY, NODE.public_key, "alpha", [], None, (lan,), False, NOW - 60, NOW + 3600
    )
    router = _record(router_cert)
    assert gate.admit(router, NOW)
    assert gate.approves_route(router, lan)
    assert gate.approves_route(router, ipaddress.ip_network("10.1.0.128/25"))  # inside it
    assert not gate.approves_route(router, ipaddress.ip_network("10.1.0.0/16"))  # wider
    plain = _record(_cert(OTHER), node=OTHER)
    assert gate.admit(plain, NOW)
    assert not gate.approves_route(plain, lan)
    assert TrustGate(None).approves_route(plain, lan)  # an open network: any member may


def test_a_default_route_needs_the_exit_node_right() -> None:
    gate = TrustGate(AUTHORITY.public_key)
    default = ipaddress.ip_network("0.0.0.0/0")
    exit_cert = sign_certificate(
        AUTHORITY, NODE.public_key, "alpha", [], None, (), True, NOW - 60, NOW + 3600
    )
    exit_record = _record(exit_cert)
    assert gate.admit(exit_record, NOW)
    assert gate.approves_route(exit_record, default)
    assert gate.approves_route(exit_record, ipaddress.ip_network("::/0"))
    plain = _record(_cert(OTHER), node=OTHER)
    assert gate.admit(plain, NOW)
    assert not gate.approves_route(plain, default)
