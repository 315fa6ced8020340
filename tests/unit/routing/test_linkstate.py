"""Link-state records: signing, canonical encoding and refusal of anything else."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.identity import Identity
from gossipmesh.routing.codec import MalformedMessage
from gossipmesh.routing.linkstate import (
    MAX_LINKS,
    MAX_RECORD_SIZE,
    MAX_RTT_US,
    Link,
    LinkStateRecord,
)

ALICE = Identity.from_seed(hashlib.sha256(b"alice").digest())
NOW_MS = 1_700_000_000_000

node_ids = st.binary(min_size=20, max_size=20)
links = st.lists(
    st.builds(Link, node_ids, st.integers(min_value=0, max_value=2 * MAX_RTT_US)), max_size=60
)


def make(links_: list[Link], sequence: int = 7, leaving: bool = False) -> LinkStateRecord:
    return LinkStateRecord.create(
        ALICE,
        sequence=sequence,
        issued_at_ms=NOW_MS,
        expires_at_ms=NOW_MS + 600_000,
        links=links_,
        leaving=leaving,
    )


@settings(max_examples=40, deadline=None)
@given(links)
def test_created_records_round_trip_and_verify(chosen: list[Link]) -> None:
    record = make(chosen)
    encoded = record.encode()
    assert len(encoded) <= MAX_RECORD_SIZE
    decoded = LinkStateRecord.decode(encoded)
    assert decoded == record
    assert decoded.encode() == encoded
    assert decoded.verify()
    assert decoded.origin == ALICE.node_id
    assert len(decoded.links) <= MAX_LINKS
    assert list(decoded.links) == sorted(decoded.links)


@settings(max_examples=300)
@given(st.binary(max_size=MAX_RECORD_SIZE + 8))
def test_decode_random_bytes_gives_a_record_or_malformed(data: bytes) -> None:
    try:
        record = LinkStateRecord.decode(data)
    except MalformedMessage:
        return
    assert record.encode() == data


@settings(max_examples=200)
@given(st.data())
def test_any_single_byte_change_is_refused_or_fails_verification(data: st.DataObject) -> None:
    encoded = bytearray(make([Link(b"\x01" * 20, 1500), Link(b"\x02" * 20, 900)]).encode())
    index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    encoded[index] ^= flip
    try:
        record = LinkStateRecord.decode(bytes(encoded))
    except MalformedMessage:
        return
    assert not record.verify()


def test_links_are_capped_to_the_lowest_rtts_and_clamped() -> None:
    many = [Link(bytes([i]) * 20, 1000 * (i + 1)) for i in range(MAX_LINKS + 5)]
    many.append(Link(b"\xee" * 20, 10 * MAX_RTT_US))
    record = make(many)
    assert len(record.links) == MAX_LINKS
    assert max(link.rtt_us for link in record.links) == 1000 * MAX_LINKS


def test_self_links_are_left_out() -> None:
    record = make([Link(ALICE.node_id, 10), Link(b"\x05" * 20, 10)])
    assert [link.neighbour for link in record.links] == [b"\x05" * 20]


def test_a_leaving_record_carries_no_links() -> None:
    record = make([Link(b"\x05" * 20, 10)], leaving=True)
    assert record.leaving and record.links == ()
    assert LinkStateRecord.decode(record.encode()).leaving


def test_unsorted_links_are_not_canonical() -> None:
    record = make([Link(b"\x01" * 20, 1), Link(b"\x02" * 20, 2)])
    swapped = LinkStateRecord(
        record.origin_public_key,
        record.sequence,
        record.issued_at_ms,
        record.expires_at_ms,
        tuple(reversed(record.links)),
        record.flags,
        record.signature,
    )
    with pytest.raises(MalformedMessage, match="sorted"):
        LinkStateRecord.decode(swapped.encode())


def test_identity_is_origin_and_sequence_not_bytes() -> None:
    first = make([Link(b"\x01" * 20, 1)], sequence=5)
    second = make([Link(b"\x01" * 20, 2)], sequence=5)
    assert first.origin == second.origin and first.sequence == second.sequence
    assert first.encode() != second.encode()


def test_lifetime_longer_than_a_day_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="a day"):
        LinkStateRecord.create(
            ALICE, sequence=1, issued_at_ms=0, expires_at_ms=2 * 86_400_000, links=[]
        )
