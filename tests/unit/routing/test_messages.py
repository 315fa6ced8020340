"""Control message codecs: size bounds, canonical round trips, one error type."""

from __future__ import annotations

import contextlib
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.routing.codec import MAX_CONTROL_PAYLOAD, PROTOCOL_VERSION, MalformedMessage
from gossipmesh.routing.messages import (
    HIGHEST_ID,
    LOWEST_ID,
    GossipType,
    Ping,
    Pong,
    decode_gossip,
    decode_probe,
    digests_for_range,
    records_batches,
    requests_for,
)
from gossipmesh.routing.relay import RelayEnvelope
from gossipmesh.wire import PayloadKind

node_ids = st.binary(min_size=20, max_size=20)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.sampled_from([*list(GossipType), 0, 9]))
def test_random_gossip_payloads_decode_or_raise_malformed(tail: bytes, kind: int) -> None:
    data = bytes((PayloadKind.GOSSIP, PROTOCOL_VERSION, kind)) + tail
    try:
        message = decode_gossip(data)
    except MalformedMessage:
        return
    assert message.encode() == data


@settings(max_examples=200)
@given(st.binary(max_size=MAX_CONTROL_PAYLOAD + 10))
def test_fully_random_payloads_never_raise_anything_else(data: bytes) -> None:
    for decode in (decode_gossip, decode_probe, RelayEnvelope.decode):
        with contextlib.suppress(MalformedMessage):
            decode(data)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(node_ids, st.integers(0, 2**64 - 1)), max_size=300, unique_by=lambda e: e[0])
)
def test_digests_split_under_the_bound_and_cover_the_range(
    entries: list[tuple[bytes, int]],
) -> None:
    entries.sort()
    pieces = digests_for_range(LOWEST_ID, HIGHEST_ID, entries)
    assert pieces[0].low == LOWEST_ID and pieces[-1].high == HIGHEST_ID
    for before, after in itertools.pairwise(pieces):
        assert int.from_bytes(after.low, "big") == int.from_bytes(before.high, "big") + 1
    assert [e for p in pieces for e in p.entries] == entries
    for piece in pieces:
        encoded = piece.encode()
        assert len(encoded) <= MAX_CONTROL_PAYLOAD
        assert decode_gossip(encoded) == piece


def test_requests_and_record_batches_respect_the_bound() -> None:
    origins = [bytes([i % 256, i // 256]) * 10 for i in range(500)]
    for request in requests_for(origins):
        assert len(request.encode()) <= MAX_CONTROL_PAYLOAD
    records = [bytes([i]) * (100 + 7 * i) for i in range(120)]
    batches = records_batches(records)
    assert [r for b in batches for r in b.records] == records
    for batch in batches:
        encoded = batch.encode()
        assert len(encoded) <= MAX_CONTROL_PAYLOAD
        assert decode_gossip(encoded) == batch


def test_ping_and_pong_round_trip() -> None:
    assert decode_probe(Ping(5, 6).encode()) == Ping(5, 6)
    assert decode_probe(Pong(2**64 - 1, 0).encode()) == Pong(2**64 - 1, 0)
    assert len(Ping(1, 1).encode()) == 18


@settings(max_examples=100)
@given(node_ids, node_ids, st.integers(0, 255), st.integers(0, 2**64 - 1), st.binary(max_size=200))
def test_relay_envelope_round_trip(
    source: bytes, destination: bytes, hop_limit: int, envelope_id: int, inner: bytes
) -> None:
    envelope = RelayEnvelope(source, destination, hop_limit, envelope_id, inner)
    if source == destination:
        try:
            RelayEnvelope.decode(envelope.encode())
        except MalformedMessage:
            return
        raise AssertionError("an envelope to its own source was accepted")
    assert RelayEnvelope.decode(envelope.encode()) == envelope
