"""Node-level control messages: round trips, size bounds, and refusals of bad bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipmesh.node.messages import (
    MAX_MESSAGE_BYTES,
    MalformedNodeMessage,
    decode_echo,
    decode_record_request,
    decode_records,
    encode_echo,
    encode_record_request,
    encode_records,
)
from gossipmesh.wire import PayloadKind


@given(st.lists(st.binary(min_size=1, max_size=1100), max_size=30))
def test_records_round_trip_within_the_size_bound(records: list[bytes]) -> None:
    messages = encode_records(records)
    assert all(len(message) <= MAX_MESSAGE_BYTES for message in messages)
    assert [r for m in messages for r in decode_records(m)] == records


@given(st.lists(st.binary(min_size=20, max_size=20), max_size=50), st.integers(0, 2**64 - 1))
def test_requests_and_echoes_round_trip(ids: list[bytes], nonce: int) -> None:
    assert decode_record_request(encode_record_request(ids)) == ids
    for kind in (PayloadKind.ECHO_REQUEST, PayloadKind.ECHO_REPLY):
        assert decode_echo(encode_echo(kind, nonce)) == (kind, nonce)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_the_documented_error(data: bytes) -> None:
    for decode in (decode_records, decode_record_request, decode_echo):
        with contextlib.suppress(MalformedNodeMessage):
            decode(data)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(MalformedNodeMessage):
        decode_echo(encode_echo(PayloadKind.ECHO_REQUEST, 1) + b"\x00")
    with pytest.raises(MalformedNodeMessage):
        decode_records(encode_records([b"abc"])[0] + b"\x00")
