"""The record store: de-duplication by (origin, sequence) before any signature check."""

from __future__ import annotations

import dataclasses
import random

import pytest

from gossipmesh.routing.gossip import Accepted, GossipEngine
from gossipmesh.routing.linkstate import Link, LinkStateRecord
from gossipmesh.routing.store import Offer, RecordStore
from gossipmesh.routing.timing import RoutingTiming

from .harness import identity_for

NOW_MS = 1_700_000_000_000
SKEW_MS = 60_000


def record(
    index: int, sequence: int, expires_in_ms: int = 600_000, issued_ms: int = NOW_MS
) -> LinkStateRecord:
    return LinkStateRecord.create(
        identity_for(index, b"store"),
        sequence=sequence,
        issued_at_ms=issued_ms,
        expires_at_ms=issued_ms + expires_in_ms,
        links=[Link(bytes([9]) * 20, 1000)],
    )


def offer(store: RecordStore, item: LinkStateRecord, now_ms: int = NOW_MS) -> Offer:
    return store.offer(item, item.encode(), now_ms, SKEW_MS)[0]


def test_offer_outcomes() -> None:
    store = RecordStore()
    first = record(1, 10)
    assert offer(store, first) is Offer.NEW
    assert offer(store, first) is Offer.STALE
    forged = dataclasses.replace(record(1, 11), signature=bytes(64))
    assert offer(store, forged) is Offer.INVALID
    # A forged copy at or below the held sequence is refused without a signature check.
    assert offer(store, dataclasses.replace(record(1, 9), signature=bytes(64))) is Offer.STALE
    assert offer(store, record(2, 1, expires_in_ms=10), NOW_MS + 10) is Offer.EXPIRED
    assert offer(store, record(3, 1, issued_ms=NOW_MS + SKEW_MS + 1)) is Offer.FUTURE
    assert offer(store, record(3, 1, issued_ms=NOW_MS + SKEW_MS)) is Offer.NEW
    newer = record(1, 12)
    outcome, previous = store.offer(newer, newer.encode(), NOW_MS, SKEW_MS)
    assert outcome is Offer.NEW and previous == first
    assert len(store) == 2


def test_expiry_follows_the_current_record_only() -> None:
    store = RecordStore(own_origin=identity_for(0, b"store").node_id)
    short = record(1, 1, expires_in_ms=1000)
    offer(store, short)
    offer(store, record(1, 2, expires_in_ms=5000))  # replaces it, expiring later
    offer(store, record(2, 1, expires_in_ms=3000))
    own = record(0, 1, expires_in_ms=10)
    store.put(own, own.encode())
    assert store.next_expiry_ms() == NOW_MS + 3000
    assert store.expire(NOW_MS + 2999) == []
    assert [r.origin for r in store.expire(NOW_MS + 3000)] == [record(2, 1).origin]
    assert store.next_expiry_ms() == NOW_MS + 5000
    assert [r.sequence for r in store.expire(NOW_MS + 10_000)] == [2]
    assert store.next_expiry_ms() is None
    assert list(store.records()) == [own]  # our own record never expires here


def test_summary_changes_with_any_sequence_and_digest_entries_are_sorted() -> None:
    store = RecordStore()
    for index in range(20):
        offer(store, record(index + 1, 5))
    before = store.summary()
    offer(store, record(7, 6))
    after = store.summary()
    assert before.record_count == after.record_count
    assert sum(a != b for a, b in zip(before.bucket_hashes, after.bucket_hashes, strict=True)) == 1
    entries = store.entries_in(bytes(20), b"\xff" * 20)
    assert [o for o, _ in entries] == sorted(r.origin for r in store.records())


def test_a_flooded_copy_is_refused_from_its_header_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drops: list[str] = []
    store = RecordStore()
    engine = GossipEngine(
        b"\x00" * 20, store, RoutingTiming(), random.Random(1), lambda *a: None, drops.append
    )
    held = record(1, 10)
    assert LinkStateRecord.peek(held.encode()) == (held.origin, 10)
    assert LinkStateRecord.peek(held.encode()[:20]) is None
    assert isinstance(engine.offer(held.encode(), NOW_MS / 1000), Accepted)

    def no_decode(data: bytes) -> LinkStateRecord:
        raise AssertionError("decoded a stale copy")

    monkeypatch.setattr(LinkStateRecord, "decode", staticmethod(no_decode))
    assert engine.offer(record(1, 9).encode(), NOW_MS / 1000) is None
    assert engine.offer(held.encode()[:-1], NOW_MS / 1000) is None  # malformed, and stale
    assert drops == ["record_stale", "record_stale"]
