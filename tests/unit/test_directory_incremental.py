"""The incremental directory against a full re-resolution of every claim.

`Directory` settles addresses and names one record at a time; the pure
rules (`resolve_ipv4_claims`, `resolve_name_claims`) over all records held
must give exactly the same owners, indexes and entry order after any
sequence of updates and removals, and `take_changes` must report every
entry that moved.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.addressing import resolve_ipv4_claims
from gossipmesh.directory import (
    ROUTED_PREFIXES_EXTENSION,
    Directory,
    Resolved,
    encode_prefixes,
    routed_prefixes,
)
from gossipmesh.identity import Identity
from gossipmesh.names import key_name, resolve_name_claims
from gossipmesh.records import NodeRecord

NETWORK = ipaddress.IPv4Network("10.9.0.0/27")
"""30 usable addresses for 8 nodes: collisions and displacements are common."""
IDENTITIES = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(8)]
NAMES = ["", "alpha", "beta", "Alpha", "bad_name", key_name(IDENTITIES[0].node_id)]
PREFIXES = [
    (),
    (ipaddress.ip_network("10.20.0.0/24"),),
    (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00:1::/64")),
]

update = st.tuples(
    st.just("update"),
    st.integers(0, len(IDENTITIES) - 1),
    st.integers(0, 3),  # ipv4 counter
    st.integers(0, 3),  # held_since
    st.integers(0, len(NAMES) - 1),
    st.integers(0, 3),  # name claimed_since
    st.integers(0, len(PREFIXES) - 1),
)
remove = st.tuples(st.just("remove"), st.integers(0, len(IDENTITIES) - 1))


def _record(
    node: int, sequence: int, counter: int, since: int, name: int, claimed: int, prefixes: int
) -> NodeRecord:
    extensions = ()
    if PREFIXES[prefixes]:
        extensions = ((ROUTED_PREFIXES_EXTENSION, encode_prefixes(PREFIXES[prefixes])),)
    return NodeRecord(
        public_key=IDENTITIES[node].public_key,
        sequence=sequence,
        issued_at=1000,
        expires_at=2000,
        ipv4_counter=counter,
        ipv4_held_since=since,
        name=NAMES[name],
        name_claimed_since=claimed if NAMES[name] else 0,
        extensions=extensions,
    )


def _reference(
    directory: Directory,
) -> tuple[list[Resolved], dict[bytes, bytes], dict[str, bytes], list]:
    """Entries and indexes as a full rebuild from the records computes them."""
    records = {record.node_id: record for record in directory.records()}
    outcomes = resolve_ipv4_claims((r.address_claim() for r in records.values()), NETWORK)
    names = resolve_name_claims(c for r in records.values() if (c := r.name_claim()) is not None)
    name_of = {node_id: name for name, node_id in names.items()}
    entries, by_address, by_name, prefixes = [], {}, dict(names), []
    for node_id, record in records.items():
        outcome = outcomes[node_id]
        ipv4 = None if outcome.displaced else outcome.address
        identity = next(i for i in IDENTITIES if i.node_id == node_id)
        entry = Resolved(
            record,
            node_id,
            identity.x25519_public_key,
            ipv4,
            record.ipv6,
            name_of.get(node_id),
            key_name(node_id),
        )
        entries.append(entry)
        if ipv4 is not None:
            by_address[ipv4.packed] = node_id
        by_address[entry.ipv6.packed] = node_id
        by_name[entry.key_name] = node_id
        prefixes.extend((prefix, node_id) for prefix in routed_prefixes(record))
    return entries, by_address, by_name, prefixes


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(update, update, remove), min_size=1, max_size=40))
def test_incremental_directory_matches_full_rebuild(operations: list[tuple]) -> None:
    directory = Directory(NETWORK)
    sequence = 0
    mirror: dict[bytes, Resolved] = {}
    """What a consumer of `take_changes` alone knows."""
    for operation in operations:
        before = {entry.node_id: entry for entry in directory}
        if operation[0] == "update":
            sequence += 1
            directory.update(_record(operation[1], sequence, *operation[2:]))
        else:
            directory.remove(IDENTITIES[operation[1]].node_id)
        entries, by_address, by_name, prefixes = _reference(directory)
        assert list(directory) == entries
        assert directory.by_address == by_address
        assert directory.by_name == by_name
        assert directory.by_x25519 == {e.x25519_public_key: e.node_id for e in entries}
        assert directory.prefixes == prefixes
        outcomes = resolve_ipv4_claims((r.address_claim() for r in directory.records()), NETWORK)
        for node_id, outcome in outcomes.items():
            assert directory.ipv4_outcome(node_id) == outcome
        changes = directory.take_changes()
        moved = {e.node_id for e in entries if before.get(e.node_id) != e}
        assert moved <= {e.node_id for e in changes.updated}
        assert set(before) - {e.node_id for e in entries} == set(changes.removed)
        for node_id in changes.removed:
            mirror.pop(node_id, None)
        mirror.update((e.node_id, e) for e in changes.updated)
        assert mirror == {e.node_id: e for e in entries}
        assert directory.take_changes().updated == []
