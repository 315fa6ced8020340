"""Addresses: pinned derivations and the IPv4 collision rule's properties."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.addressing import (
    DEFAULT_IPV4_NETWORK,
    IPV6_PREFIX,
    RESOLVER_IPV4,
    AddressClaim,
    first_ipv4,
    ipv4_for,
    ipv6_for,
    parse_ipv4_network,
    reserved_ipv4,
    resolve_ipv4_claims,
)
from gossipmesh.identity import Identity

# Pinned: seed -> (IPv6, IPv4 at counter 0, IPv4 at counter 1). See test_identity.KNOWN.
KNOWN = [
    (bytes(32), "fd68:b0bf:8bba:be91:70a5:cb99:8fdb:d883", "100.102.51.198", "100.93.18.196"),
    (bytes(range(32)), "fd71:c63b:3e52:1a69:b059:48e9:a8b3:e151", "100.90.212.215", "100.80.59.59"),
]


@pytest.mark.parametrize(("seed", "ipv6", "ipv4_0", "ipv4_1"), KNOWN)
def test_known_addresses(seed: bytes, ipv6: str, ipv4_0: str, ipv4_1: str) -> None:
    public_key = Identity.from_seed(seed).public_key
    assert str(ipv6_for(public_key)) == ipv6
    assert str(ipv4_for(public_key, 0)) == ipv4_0
    assert str(ipv4_for(public_key, 1)) == ipv4_1


@given(st.binary(min_size=32, max_size=32), st.integers(0, 1000))
def test_derived_addresses_stay_inside_their_ranges(public_key: bytes, counter: int) -> None:
    assert ipv6_for(public_key) in IPV6_PREFIX
    address = ipv4_for(public_key, counter)
    if address is not None:
        assert address in DEFAULT_IPV4_NETWORK
        assert address not in reserved_ipv4(DEFAULT_IPV4_NETWORK)


def test_tiny_network_never_derives_reserved_addresses() -> None:
    network = ipaddress.IPv4Network("10.0.0.0/30")
    reserved = reserved_ipv4(network)
    for seed in range(50):
        key = seed.to_bytes(32, "big")
        _, address = first_ipv4(key, network)
        assert address not in reserved
    assert RESOLVER_IPV4 in reserved_ipv4(DEFAULT_IPV4_NETWORK)


def test_parse_network_errors_say_what_is_wrong() -> None:
    assert parse_ipv4_network("10.1.0.0/16").prefixlen == 16
    for bad, words in [("10.1.0.1/16", "host bits"), ("nonsense", "CIDR"), ("10.0.0.0/31", "/30")]:
        with pytest.raises(ValueError, match=words):
            parse_ipv4_network(bad)


# --- the collision rule --------------------------------------------------------

SMALL = ipaddress.IPv4Network("10.9.0.0/28")  # 14 usable addresses: collisions are common


def _claims(draw_keys: list[int], times: list[int], counters: list[int]) -> list[AddressClaim]:
    claims = []
    for key_seed, held_since, counter in zip(draw_keys, times, counters, strict=False):
        identity = Identity.from_seed(key_seed.to_bytes(32, "big"))
        claims.append(AddressClaim(held_since, identity.node_id, identity.public_key, counter))
    return claims


claim_sets = st.builds(
    _claims,
    st.lists(st.integers(0, 10_000), min_size=1, max_size=10, unique=True),
    st.lists(st.integers(0, 50), min_size=10, max_size=10),
    st.lists(st.integers(0, 3), min_size=10, max_size=10),
)


@settings(max_examples=60, deadline=None)
@given(claim_sets, st.randoms(use_true_random=False))
def test_rule_ignores_input_order(claims: list[AddressClaim], rng: random.Random) -> None:
    shuffled = list(claims)
    rng.shuffle(shuffled)
    assert resolve_ipv4_claims(claims, SMALL) == resolve_ipv4_claims(shuffled, SMALL)


@settings(max_examples=60, deadline=None)
@given(claim_sets)
def test_rule_never_gives_one_address_to_two_nodes(claims: list[AddressClaim]) -> None:
    outcome = resolve_ipv4_claims(claims, SMALL)
    addresses = [result.address for result in outcome.values()]
    assert len(addresses) == len(set(addresses))
    assert set(outcome) == {claim.node_id for claim in claims}
    for result in outcome.values():
        assert result.address not in reserved_ipv4(SMALL)


@settings(max_examples=60, deadline=None)
@given(claim_sets, st.integers(0, 10_000))
def test_newcomer_never_moves_an_existing_holder(
    claims: list[AddressClaim], newcomer_seed: int
) -> None:
    before = resolve_ipv4_claims(claims, SMALL)
    newcomer = Identity.from_seed((newcomer_seed + 1_000_000).to_bytes(32, "big"))
    latest = max(claim.held_since for claim in claims) + 1
    counter, _ = first_ipv4(newcomer.public_key, SMALL)
    arrival = AddressClaim(latest, newcomer.node_id, newcomer.public_key, counter)
    after = resolve_ipv4_claims([*claims, arrival], SMALL)
    for node_id, result in before.items():
        if not result.displaced:
            assert after[node_id] == result


def test_collision_goes_to_the_earlier_holder() -> None:
    network = ipaddress.IPv4Network("10.9.0.0/30")  # two usable addresses
    a, b = Identity.from_seed(bytes(32)), Identity.from_seed(bytes(range(32)))
    counter_a, address_a = first_ipv4(a.public_key, network)
    # Find b's counter that lands on a's address, so they collide.
    counter_b = next(c for c in range(100) if ipv4_for(b.public_key, c, network) == address_a)
    outcome = resolve_ipv4_claims(
        [
            AddressClaim(200, b.node_id, b.public_key, counter_b),
            AddressClaim(100, a.node_id, a.public_key, counter_a),
        ],
        network,
    )
    assert outcome[a.node_id].address == address_a and not outcome[a.node_id].displaced
    assert outcome[b.node_id].displaced
    assert outcome[b.node_id].address != address_a
    assert outcome[b.node_id].counter > counter_b
