"""Names: label rules, key-derived names and the name-conflict rule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.errors import LabelError
from gossipmesh.identity import Identity
from gossipmesh.names import (
    NameClaim,
    check_claimable,
    default_name_from_hostname,
    is_key_name,
    key_name,
    normalize_label,
    resolve_name_claims,
)


def test_known_key_names() -> None:
    assert key_name(Identity.from_seed(bytes(32)).node_id) == "gm-zhboz4b3mni6cik4"
    assert key_name(Identity.from_seed(bytes(range(32))).node_id) == "gm-g4drraxpynak5zah"


@pytest.mark.parametrize("label", ["server", "Server", "a", "a-b", "x" * 63, "1host", "db-01"])
def test_valid_labels(label: str) -> None:
    assert normalize_label(label) == label.lower()


@pytest.mark.parametrize(
    "label", ["", "-a", "a-", "a_b", "a.b", "x" * 64, "héllo", "a b", "ümlaut", "a\n"]
)
def test_invalid_labels(label: str) -> None:
    with pytest.raises(LabelError):
        normalize_label(label)


def test_only_its_key_may_claim_a_key_name() -> None:
    owner, other = Identity.generate(), Identity.generate()
    own = key_name(owner.node_id)
    assert is_key_name(own)
    assert check_claimable(own.upper(), owner.node_id) == own
    with pytest.raises(LabelError, match="reserved"):
        check_claimable(own, other.node_id)


def test_default_name_falls_back_to_key_name() -> None:
    node_id = Identity.generate().node_id
    assert default_name_from_hostname("Build-01.example.org", node_id) == "build-01"
    assert default_name_from_hostname("bad_host", node_id) == key_name(node_id)


def _claimable(claim: NameClaim) -> bool:
    try:
        check_claimable(claim.name, claim.node_id)
    except LabelError:
        return False
    return True


_IDS = [Identity.from_seed(i.to_bytes(32, "big")).node_id for i in range(8)]
name_claims = st.lists(
    st.builds(
        NameClaim,
        st.integers(0, 20),
        st.sampled_from(_IDS),
        st.sampled_from(["alpha", "Beta", "gamma", "bad_name", key_name(_IDS[0])]),
    ),
    max_size=20,
)


@settings(max_examples=80, deadline=None)
@given(name_claims, st.randoms(use_true_random=False))
def test_name_rule_ignores_order(claims: list[NameClaim], rng: random.Random) -> None:
    shuffled = list(claims)
    rng.shuffle(shuffled)
    assert resolve_name_claims(claims) == resolve_name_claims(shuffled)


@settings(max_examples=80, deadline=None)
@given(name_claims)
def test_name_rule_gives_each_name_to_its_earliest_valid_claimant(claims: list[NameClaim]) -> None:
    holders = resolve_name_claims(claims)
    assert len(set(holders.values())) == len(holders), "a node holds at most one name"
    for name, holder in holders.items():
        contenders = [c for c in claims if c.name.lower() == name and _claimable(c)]
        best = min(contenders, key=lambda c: (c.claimed_since, c.node_id))
        if best.node_id != holder:
            # The earliest claimant may only lose the name to the rule that a node
            # holds one name: it must then hold an earlier-ordered one.
            assert best.node_id in holders.values()
    assert "bad_name" not in holders
    owner_key_name = key_name(_IDS[0])
    assert holders.get(owner_key_name, _IDS[0]) == _IDS[0]


@settings(max_examples=50, deadline=None)
@given(name_claims)
def test_newcomer_never_takes_a_held_name(claims: list[NameClaim]) -> None:
    before = resolve_name_claims(claims)
    newcomer = Identity.from_seed(b"\x99" * 32).node_id
    late = max((c.claimed_since for c in claims), default=0) + 1
    after = resolve_name_claims([*claims, *(NameClaim(late, newcomer, n) for n in before)])
    assert after == before
