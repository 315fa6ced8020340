"""Admission by certificate, revocation and expiry, on real node cores (CoreNet, no loop).

The attacker cases are built the way an attacker would: a member with a
valid certificate for its own key, a node with no certificate, one from
another authority, one that claims a name its certificate does not grant,
and one whose certificate is revoked or expires while it is in the mesh.
"""

from __future__ import annotations

from typing import Any

import pytest

from gossipmesh.identity import Identity
from gossipmesh.node.core import NodeCore
from gossipmesh.policy.signed import sign_policy
from gossipmesh.trust.certificate import sign_certificate
from gossipmesh.trust.document import DocumentError, DocumentKind, sign_document
from gossipmesh.trust.revocation import RevocationList, sign_revocations
from tests.support.loopback_mesh import echo_request

from .harness import WALL_OFFSET, CoreNet
from .test_core import CONVERGE, run_until_true

AUTHORITY = Identity.from_seed(b"a" * 32)
ROGUE_AUTHORITY = Identity.from_seed(b"r" * 32)
LONG = 10 * 365 * 24 * 3600


def _certified(
    *,
    uncertified: frozenset[int] = frozenset(),
    foreign: frozenset[int] = frozenset(),
    names: dict[int, str] | None = None,
    lies: dict[int, str] | None = None,
    lifetimes: dict[int, int] | None = None,
) -> Any:
    """NodeOptions for CoreNet: node i gets a certificate for name node{i} (with exceptions)."""

    def options(index: int, identity: Identity) -> dict[str, Any]:
        extra: dict[str, Any] = {"authority_public_key": AUTHORITY.public_key}
        if index in (lies or {}):
            extra["name"] = (lies or {})[index]  # what the node claims in its records
        if index in uncertified:
            return extra
        signer = ROGUE_AUTHORITY if index in foreign else AUTHORITY
        granted = (names or {}).get(index, f"node{index}")
        start = int(WALL_OFFSET) - 10
        extra["certificate"] = sign_certificate(
            signer,
            identity.public_key,
            granted,
            ["web"] if index % 2 else ["dev"],
            None,
            (),
            False,
            start,
            start + (lifetimes or {}).get(index, LONG),
        ).encode()
        return extra

    return options


def _knows(core: NodeCore, other: NodeCore) -> bool:
    return core.directory.get(other.identity.node_id) is not None


def _routes(core: NodeCore, other: NodeCore) -> bool:
    return core.routing.route(other.identity.node_id) is not None


def test_certified_nodes_form_a_mesh_and_know_each_others_groups() -> None:
    net = CoreNet(4, options=_certified())
    net.start()
    cores = [m.core for m in net.members]
    run_until_true(
        net, lambda: all(_routes(a, b) for a in cores for b in cores if a is not b), CONVERGE
    )
    assert cores[0].gate.groups(cores[1].identity.node_id) == ("web",)
    assert cores[1].gate.groups(cores[2].identity.node_id) == ("dev",)


def test_no_certificate_or_another_authoritys_is_never_admitted() -> None:
    net = CoreNet(4, options=_certified(uncertified=frozenset({2}), foreign=frozenset({3})))
    net.start()
    honest = [net.members[0].core, net.members[1].core]
    intruders = [net.members[2].core, net.members[3].core]
    run_until_true(net, lambda: _routes(honest[0], honest[1]), CONVERGE)
    net.run_for(60.0)
    for core in honest:
        for intruder in intruders:
            assert not _knows(core, intruder)
            assert core.sessions.peer(intruder.identity.x25519_public_key) is None
    refused = honest[0].gate.refused
    assert refused.get("no_certificate", 0) > 0
    assert refused.get("wrong_authority", 0) > 0


def test_a_member_claiming_a_name_its_certificate_does_not_grant_is_refused() -> None:
    # Node 2's certificate grants "node2", but it claims "node0" (the victim's name).
    net = CoreNet(3, options=_certified(lies={2: "node0"}))
    lie = net.members[2].core
    net.start()
    a, b = net.members[0].core, net.members[1].core
    run_until_true(net, lambda: _routes(a, b), CONVERGE)
    net.run_for(60.0)
    assert not _knows(a, lie) and not _knows(b, lie)
    assert a.directory.lookup_name("node0") is not None
    assert a.directory.lookup_name("node0").node_id == a.identity.node_id  # type: ignore[union-attr]
    assert b.gate.refused.get("name_not_granted", 0) > 0


def test_revocation_cuts_a_node_off_everywhere() -> None:
    net = CoreNet(4, options=_certified())
    net.start()
    cores = [m.core for m in net.members]
    run_until_true(
        net, lambda: all(_routes(a, b) for a in cores for b in cores if a is not b), CONVERGE
    )
    victim = cores[3]
    revoked_key = victim.identity.public_key
    document = sign_revocations(
        AUTHORITY, RevocationList(public_keys=frozenset({revoked_key})), 1, int(WALL_OFFSET)
    )
    cores[0].offer_document(document.encode(), net.now)
    others = cores[:3]
    run_until_true(
        net,
        lambda: all(DocumentKind.REVOCATIONS in c.trust.documents.held for c in others),
        30.0,
        step=0.1,
    )
    for core in others:
        assert not _knows(core, victim)
        assert core.sessions.peer(victim.identity.x25519_public_key) is None
        assert core.counters.nodes_excluded == 1
    net.run_for(60.0)  # its records keep coming from the DHT and from itself: still refused
    for core in others:
        assert not _knows(core, victim)
        assert not _routes(core, victim)
        assert core.gate.refused.get("revoked", 0) > 0
    assert all(_routes(a, b) for a in others for b in others if a is not b)


def test_an_expiring_certificate_takes_its_node_out() -> None:
    net = CoreNet(3, options=_certified(lifetimes={2: 200}))
    net.start()
    a, b, short = (m.core for m in net.members)
    run_until_true(net, lambda: _knows(a, short) and _knows(b, short), CONVERGE)
    expiry = int(WALL_OFFSET) - 10 + 200 - WALL_OFFSET
    run_until_true(
        net, lambda: not _knows(a, short) and not _knows(b, short), expiry - net.now + 30
    )
    assert net.now >= expiry
    assert _routes(a, b)


DEV_TO_WEB_ICMP = """\
version = {version}
[[rules]]
from = ["group:dev"]
to = ["group:web"]
proto = "icmp"
"""


def _echo_reply(request: bytes) -> bytes:
    """The kernel's answer to an echo request: addresses swapped, type 0."""
    reply = bytearray(request)
    reply[12:16], reply[16:20] = request[16:20], request[12:16]
    reply[20] = 0
    return bytes(reply)


def _sent_and_seen(net: CoreNet, source: Any, target: Any, packet: bytes) -> bool:
    source.core.tun_packets([packet], net.now)
    net.settle()
    net.run_for(3.0)
    return packet in target.delivered


def test_default_deny_then_the_pushed_policy_decides_every_new_flow() -> None:
    net = CoreNet(3, options=_certified())  # node0, node2: dev; node1: web
    net.start()
    dev, web, dev2 = net.members
    cores = [m.core for m in net.members]
    run_until_true(
        net, lambda: all(_routes(a, b) for a in cores for b in cores if a is not b), CONVERGE
    )

    # An authority but no policy yet: nothing new gets in, not even ICMP.
    assert not _sent_and_seen(net, dev, web, echo_request(dev.core.ipv4, web.core.ipv4, 1))
    assert web.core.trust.policy is not None
    assert web.core.trust.policy.filter.counters.no_policy >= 1

    signed = sign_policy(AUTHORITY, DEV_TO_WEB_ICMP.format(version=1), int(WALL_OFFSET))
    dev2.core.offer_document(signed.encode(), net.now)
    run_until_true(net, lambda: all(c.trust.policy.version == 1 for c in cores), 30.0, 0.1)  # type: ignore[union-attr]

    request = echo_request(dev.core.ipv4, web.core.ipv4, 2)
    assert _sent_and_seen(net, dev, web, request)  # dev -> web: a rule allows it
    assert _sent_and_seen(net, web, dev, _echo_reply(request))  # its reply passes back
    unsolicited = echo_request(web.core.ipv4, dev.core.ipv4, 3)
    assert not _sent_and_seen(net, web, dev, unsolicited)  # web -> dev: no rule
    assert dev.core.trust.policy.filter.counters.no_rule >= 1  # type: ignore[union-attr]
    assert not _sent_and_seen(net, dev2, dev, echo_request(dev2.core.ipv4, dev.core.ipv4, 4))


def test_a_signed_policy_that_does_not_parse_is_refused_and_the_old_one_stays() -> None:
    net = CoreNet(1, options=_certified())
    net.start()
    core = net.members[0].core
    good = sign_policy(AUTHORITY, DEV_TO_WEB_ICMP.format(version=1), int(WALL_OFFSET))
    core.offer_document(good.encode(), net.now)
    broken = sign_document(AUTHORITY, DocumentKind.POLICY, 2, int(WALL_OFFSET), b"rules = 1\n")
    with pytest.raises(DocumentError) as caught:
        core.offer_document(broken.encode(), net.now)
    assert caught.value.reason.value == "malformed"
    assert core.trust.policy is not None and core.trust.policy.version == 1
    assert core.trust.documents.held[DocumentKind.POLICY].version == 1
