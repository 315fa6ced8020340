"""Selectors, the reference evaluator, and the compiled decision agreeing with it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.policy import evaluate
from gossipmesh.policy.evaluate import CompiledPolicy
from gossipmesh.policy.model import Policy, parse_policy
from gossipmesh.policy.peer import Endpoint, PeerIdentity
from tests.unit.policy.packets import packed

WEB = PeerIdentity("web1", frozenset({"web"}), frozenset({packed("100.64.0.2"), packed("fd00::2")}))
ALICE = PeerIdentity(
    "alice", frozenset({"dev"}), frozenset({packed("100.64.0.1"), packed("fd00::1")})
)
BOB = PeerIdentity("bob", frozenset({"ops"}), frozenset({packed("100.64.0.3")}))
TCP, UDP, ICMP, ICMP6, GRE = 6, 17, 1, 58, 47


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def policy(rules: str, head: str = "") -> Policy:
    return parse_policy(f"version = 1\n{head}\n{rules}")


def rule(source: str, target: str, proto: str = "tcp", ports: str = "") -> str:
    text = f'[[rules]]\nfrom = [{source}]\nto = [{target}]\nproto = "{proto}"\n'
    return text + (f"ports = [{ports}]\n" if ports else "")


def reference(p: Policy, source: Endpoint, target: Endpoint, proto: int, port: int) -> int | None:
    found = p.first_allowing_rule(source, target, proto, port)
    return found.number if found else None


# --- selectors, through the reference evaluator ------------------------------------------


def test_star_matches_every_source_even_without_a_certificate() -> None:
    p = policy(rule('"*"', '"*"'))
    assert reference(p, Endpoint(), Endpoint(), TCP, 1) == 1
    assert reference(p, Endpoint(ip("10.0.0.1")), Endpoint(None, "x"), TCP, 65535) == 1


def test_group_matches_a_certificate_group_and_its_policy_members() -> None:
    p = policy(rule('"group:admins"', '"*"'), '[groups]\nadmins = ["group:dev", "host:bob"]\n')
    assert reference(p, Endpoint(None, None, frozenset({"admins"})), Endpoint(), TCP, 1) == 1
    assert reference(p, Endpoint(None, None, frozenset({"dev"})), Endpoint(), TCP, 1) == 1
    assert reference(p, Endpoint(None, "bob"), Endpoint(), TCP, 1) == 1
    assert reference(p, Endpoint(None, "carol", frozenset({"ops"})), Endpoint(), TCP, 1) is None
    assert reference(p, Endpoint(None, "dev"), Endpoint(), TCP, 1) is None  # a name, not a group


def test_host_matches_the_certified_name_and_its_hosts_prefix() -> None:
    p = policy(rule('"host:lab"', '"*"'), '[hosts]\nlab = "10.20.0.0/24"\n')
    assert reference(p, Endpoint(None, "lab"), Endpoint(), TCP, 1) == 1
    assert reference(p, Endpoint(ip("10.20.0.77")), Endpoint(), TCP, 1) == 1
    assert reference(p, Endpoint(ip("10.20.1.1")), Endpoint(), TCP, 1) is None
    assert reference(p, Endpoint(None, None, frozenset({"lab"})), Endpoint(), TCP, 1) is None


def test_cidr_never_matches_an_address_of_the_other_family_or_none() -> None:
    p = policy(rule('"cidr:::/0"', '"*"'))
    assert reference(p, Endpoint(ip("fd00::9")), Endpoint(), TCP, 1) == 1
    assert reference(p, Endpoint(ip("10.0.0.1")), Endpoint(), TCP, 1) is None
    assert reference(p, Endpoint(None, "alice"), Endpoint(), TCP, 1) is None


def test_ports_and_protocols() -> None:
    p = policy(
        rule('"*"', '"*"', "tcp", '"22", "8000-8100"')
        + rule('"*"', '"*"', "icmp")
        + rule('"host:gre"', '"*"', "any")
    )
    anyone, there = Endpoint(), Endpoint()
    assert [reference(p, anyone, there, TCP, port) for port in (21, 22, 23, 8000, 8100, 8101)] == [
        None,
        1,
        None,
        1,
        1,
        None,
    ]
    assert reference(p, anyone, there, UDP, 22) is None
    assert reference(p, anyone, there, ICMP, 0) == 2
    assert reference(p, anyone, there, ICMP6, 0) == 2
    assert reference(p, anyone, there, GRE, 0) is None
    assert reference(p, Endpoint(None, "gre"), there, GRE, 0) == 3


def test_the_first_allowing_rule_is_reported() -> None:
    p = policy(rule('"group:dev"', '"*"', "udp") + rule('"*"', '"*"', "tcp") * 2)
    assert reference(p, Endpoint(None, None, frozenset({"dev"})), Endpoint(), TCP, 5) == 2


# --- the compiled decision -----------------------------------------------------------------


def test_identity_counts_only_from_the_nodes_own_addresses() -> None:
    """A packet from a subnet routed behind alice is not alice's: group:dev does not cover it."""
    compiled = CompiledPolicy(policy(rule('"group:dev"', '"*"')), WEB)
    to_web = packed("100.64.0.2")
    assert compiled.allows(ALICE, packed("100.64.0.1"), to_web, TCP, 22)
    assert compiled.allows(ALICE, packed("fd00::1"), packed("fd00::2"), TCP, 22)
    assert not compiled.allows(ALICE, packed("10.20.0.5"), to_web, TCP, 22)
    assert not compiled.allows(None, packed("100.64.0.1"), to_web, TCP, 22)
    assert not compiled.allows(BOB, packed("100.64.0.3"), to_web, TCP, 22)


def test_to_identity_covers_only_this_nodes_addresses_not_its_leaves() -> None:
    p = policy(
        rule('"*"', '"group:web"', "tcp", "22") + rule('"*"', '"cidr:10.20.0.0/24"', "tcp", "80")
    )
    compiled = CompiledPolicy(p, WEB)
    src = packed("100.64.0.1")
    assert compiled.allows(ALICE, src, packed("100.64.0.2"), TCP, 22)
    assert not compiled.allows(ALICE, src, packed("10.20.0.9"), TCP, 22)  # a leaf of web1
    assert compiled.allows(ALICE, src, packed("10.20.0.9"), TCP, 80)
    assert not compiled.allows(ALICE, src, packed("100.64.0.2"), TCP, 80)


def test_rules_that_cannot_reach_this_node_are_dropped_at_compile_time() -> None:
    p = policy(
        rule('"*"', '"group:db"')
        + rule('"*"', '"host:other"')
        + rule('"*"', '"group:web"')
        + rule('"*"', '"host:web1"')
        + rule('"*"', '"cidr:10.99.0.0/16"')
        + rule('"*"', '"*"', "udp")
    )
    assert [r.rule.number for r in CompiledPolicy(p, WEB).rules] == [3, 4, 5, 6]
    served = [ipaddress.ip_network("10.20.0.0/24")]
    assert [r.rule.number for r in CompiledPolicy(p, WEB, served).rules] == [3, 4, 6]


def test_the_cache_of_views_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate, "MAX_CACHED_PRINCIPALS", 3)
    compiled = CompiledPolicy(policy(rule('"group:g7"', '"*"')), WEB)
    for index in range(10):
        address = packed(f"100.64.1.{index}")
        peer = PeerIdentity(f"n{index}", frozenset({f"g{index}"}), frozenset({address}))
        assert compiled.allows(peer, address, packed("100.64.0.2"), TCP, 1) == (index == 7)
        assert len(compiled._views) <= 3


def test_no_rule_means_deny() -> None:
    compiled = CompiledPolicy(policy(""), WEB)
    assert not compiled.allows(ALICE, packed("100.64.0.1"), packed("100.64.0.2"), TCP, 22)


# --- compiled == reference, on random policies and flows ---------------------------------

SELECTORS = [
    "*",
    "group:dev",
    "group:web",
    "group:admins",
    "host:alice",
    "host:web1",
    "host:lab",
    "cidr:100.64.0.0/16",
    "cidr:100.64.0.1/32",
    "cidr:fd00::/8",
    "cidr:10.20.0.128/25",
]
HEAD = (
    '[groups]\nadmins = ["group:ops", "host:alice"]\n[hosts]\nlab = ["10.20.0.0/24", "fd20::/64"]\n'
)
PEERS = [ALICE, BOB, None, PeerIdentity("carol", frozenset({"web", "dev"}), frozenset())]
SOURCES = ["100.64.0.1", "100.64.0.3", "fd00::1", "10.20.0.5", "10.20.0.200", "fd20::7", "1.2.3.4"]
TARGETS = ["100.64.0.2", "fd00::2", "10.20.0.9", "10.20.0.130", "fd20::5", "100.64.9.9"]
SERVED = [ipaddress.ip_network("10.20.0.0/24"), ipaddress.ip_network("fd20::/64")]

rules_strategy = st.lists(
    st.tuples(
        st.lists(st.sampled_from(SELECTORS), min_size=1, max_size=3),
        st.lists(st.sampled_from(SELECTORS), min_size=1, max_size=3),
        st.sampled_from(["tcp", "udp", "icmp", "any"]),
        st.sampled_from(["", '"22"', '"53", "80"', '"1000-2000"', '"0-21", "23-65535"']),
    ),
    max_size=8,
)
flows_strategy = st.lists(
    st.tuples(
        st.sampled_from(PEERS),
        st.sampled_from(SOURCES),
        st.sampled_from(TARGETS),
        st.sampled_from([TCP, UDP, ICMP, ICMP6, GRE]),
        st.sampled_from([0, 22, 53, 80, 1500, 3000]),
    ),
    min_size=1,
    max_size=30,
)


def _policy_text(rules: list[tuple[list[str], list[str], str, str]]) -> Policy:
    text = ""
    for sources, targets, proto, ports in rules:
        quoted = ", ".join(f'"{s}"' for s in sources), ", ".join(f'"{t}"' for t in targets)
        text += rule(quoted[0], quoted[1], proto, ports if proto in ("tcp", "udp") else "")
    return policy(text, HEAD)


@settings(max_examples=300, deadline=None)
@given(rules_strategy, flows_strategy, st.booleans())
def test_compiled_agrees_with_the_reference(
    rules: list[tuple[list[str], list[str], str, str]],
    flows: list[tuple[PeerIdentity | None, str, str, int, int]],
    pruned: bool,
) -> None:
    p = _policy_text(rules)
    compiled = CompiledPolicy(p, WEB, SERVED if pruned else None)
    for peer, src, dst, proto, port in flows:
        if pruned and dst == "100.64.9.9":
            continue  # neither this node nor served: pruning may drop what reaches it
        source = packed(src)
        target = packed(dst)
        expected = p.first_allowing_rule(
            Endpoint.of_packet(peer, source), Endpoint.of_packet(WEB, target), proto, port
        )
        assert compiled.allows(peer, source, target, proto, port) == (expected is not None), (
            peer,
            src,
            dst,
            proto,
            port,
        )
