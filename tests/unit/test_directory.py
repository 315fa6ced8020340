"""The directory: indexes the data plane uses, and conflict outcomes applied."""

from __future__ import annotations

import ipaddress

from gossipmesh.addressing import first_ipv4, ipv4_for
from gossipmesh.directory import (
    ROUTED_PREFIXES_EXTENSION,
    Directory,
    decode_prefixes,
    encode_prefixes,
)
from gossipmesh.identity import Identity
from gossipmesh.records import Endpoint, EndpointKind, NodeRecord


def _info(
    identity: Identity,
    sequence: int = 1,
    name: str | None = None,
    since: int = 0,
    counter: int = 0,
    extensions: tuple[tuple[int, bytes], ...] = (),
) -> NodeRecord:
    return NodeRecord(
        public_key=identity.public_key,
        sequence=sequence,
        issued_at=1000,
        expires_at=2000,
        ipv4_counter=counter,
        ipv4_held_since=since,
        name=(name or "").lower(),
        name_claimed_since=since if name else 0,
        endpoints=(Endpoint(EndpointKind.HOST, "192.0.2.1", 51821),),
        extensions=extensions,
    ).signed(identity)


def test_indexes_by_address_key_and_name() -> None:
    directory = Directory()
    alice = Identity.from_seed(bytes(32))
    assert directory.update(_info(alice, name="Alice"))
    entry = directory.lookup_name("alice")
    assert entry is not None and entry.node_id == alice.node_id
    assert directory.lookup_name(entry.key_name) == entry
    assert entry.ipv4 is not None
    assert directory.by_address[entry.ipv4.packed] == alice.node_id
    assert directory.by_address[entry.ipv6.packed] == alice.node_id
    assert directory.by_x25519[alice.x25519_public_key] == alice.node_id
    assert directory.lookup_address(entry.ipv6) == entry


def test_older_sequence_is_ignored_and_removal_clears_indexes() -> None:
    directory = Directory()
    alice = Identity.generate()
    directory.update(_info(alice, sequence=5, name="new"))
    assert not directory.update(_info(alice, sequence=4, name="old"))
    assert directory.lookup_name("new") is not None and directory.lookup_name("old") is None
    assert directory.remove(alice.node_id)
    assert not directory.by_address and directory.lookup_name("new") is None


def test_colliding_newcomer_gets_no_ipv4_until_it_moves() -> None:
    network = ipaddress.IPv4Network("10.5.0.0/29")
    directory = Directory(network)
    holder, newcomer = Identity.from_seed(bytes(32)), Identity.from_seed(bytes(range(32)))
    _, holder_address = first_ipv4(holder.public_key, network)
    clash = next(
        c for c in range(200) if ipv4_for(newcomer.public_key, c, network) == holder_address
    )
    directory.update(_info(holder, since=10))
    directory.update(_info(newcomer, since=20, counter=clash))
    assert directory.by_address[holder_address.packed] == holder.node_id
    moved = directory.ipv4_outcome(newcomer.node_id)
    assert moved is not None and moved.displaced
    newcomer_entry = directory.get(newcomer.node_id)
    assert newcomer_entry is not None and newcomer_entry.ipv4 is None
    directory.update(_info(newcomer, sequence=2, since=30, counter=moved.counter))
    newcomer_entry = directory.get(newcomer.node_id)
    assert newcomer_entry is not None and newcomer_entry.ipv4 == moved.address


def test_name_conflict_goes_to_earlier_claim() -> None:
    directory = Directory()
    first, second = Identity.generate(), Identity.generate()
    directory.update(_info(second, name="server", since=50))
    directory.update(_info(first, name="server", since=40))
    winner = directory.lookup_name("server")
    assert winner is not None and winner.node_id == first.node_id
    loser = directory.get(second.node_id)
    assert loser is not None and loser.name is None
    assert directory.lookup_name(loser.key_name) == loser


def test_routed_prefixes_round_trip_and_route_to_their_owner() -> None:
    prefixes = (ipaddress.ip_network("10.20.0.0/24"), ipaddress.ip_network("fd00:1::/64"))
    assert decode_prefixes(encode_prefixes(prefixes)) == prefixes
    assert decode_prefixes(b"\x04\x18\x0a") == ()  # truncated: ignored
    directory = Directory()
    router = Identity.generate()
    directory.update(
        _info(router, extensions=((ROUTED_PREFIXES_EXTENSION, encode_prefixes(prefixes)),))
    )
    owner = directory.lookup_address(ipaddress.ip_address("10.20.0.7"))
    assert owner is not None and owner.node_id == router.node_id
    assert directory.lookup_address(ipaddress.ip_address("10.21.0.7")) is None
