"""Signed records: codec round trips, canonical form, validation rules, random input."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.addressing import ipv4_for, ipv6_for
from gossipmesh.identity import Identity
from gossipmesh.records import (
    MAX_CLOCK_SKEW,
    MAX_ENDPOINTS,
    MAX_LIFETIME,
    MAX_RECORD_SIZE,
    Endpoint,
    EndpointKind,
    NameRecord,
    NodeRecord,
    RecordError,
    RefusalReason,
    decode_name_record,
    decode_node_record,
    decode_record,
    name_key,
    record_key,
    validate,
)

NOW = 1_700_000_000
ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))


def node_record(identity: Identity = ALICE, **changes: object) -> NodeRecord:
    fields: dict[str, object] = dict(
        public_key=identity.public_key,
        sequence=5,
        issued_at=NOW,
        expires_at=NOW + 1800,
        ipv4_counter=2,
        ipv4_held_since=NOW - 100,
        name="alice",
        name_claimed_since=NOW - 50,
        endpoints=(
            Endpoint(EndpointKind.HOST, "192.0.2.1", 51821),
            Endpoint(EndpointKind.REFLEXIVE, "2001:db8::1", 40000),
        ),
    )
    fields.update(changes)
    return NodeRecord(**fields).signed(identity)  # type: ignore[arg-type]


def name_record(identity: Identity = ALICE, **changes: object) -> NameRecord:
    fields: dict[str, object] = dict(
        name="alice",
        public_key=identity.public_key,
        claimed_since=NOW - 50,
        sequence=5,
        issued_at=NOW,
        expires_at=NOW + 1800,
    )
    fields.update(changes)
    return NameRecord(**fields).signed(identity)  # type: ignore[arg-type]


def reason(excinfo: pytest.ExceptionInfo[RecordError]) -> RefusalReason:
    return excinfo.value.reason


def test_node_record_round_trip_and_derived_addresses() -> None:
    record = node_record()
    data = record.encode()
    assert len(data) < 300
    decoded = decode_node_record(data)
    assert decoded == record
    assert decode_record(data) == record
    assert decoded.ipv6 == ipv6_for(ALICE.public_key)
    assert decoded.ipv4() == ipv4_for(ALICE.public_key, 2)
    assert decoded.address_claim().counter == 2
    claim = decoded.name_claim()
    assert claim is not None and claim.name == "alice"
    assert validate(decoded, NOW) is decoded
    assert record_key(decoded) == ALICE.node_id


def test_name_record_round_trip_and_key() -> None:
    record = name_record()
    assert decode_name_record(record.encode()) == record
    assert record_key(record) == name_key("ALICE") == name_key("alice")
    assert len(name_key("alice")) == 20


def test_unknown_endpoint_kinds_and_extensions_round_trip_signed() -> None:
    record = node_record(
        endpoints=(Endpoint(9, "10.0.0.1", 7, b"future"),), extensions=((3, b"x"), (200, b""))
    )
    decoded = decode_node_record(record.encode())
    assert decoded == record and decoded.signature_valid()


def test_canonical_encoding_refuses_other_forms() -> None:
    data = bytearray(node_record().encode())
    with pytest.raises(RecordError) as excinfo:
        decode_node_record(bytes(data) + b"\0")
    assert reason(excinfo) is RefusalReason.MALFORMED
    # An upper-case name is the same label, but not the canonical encoding.
    upper = data.replace(b"alice", b"ALICE")
    with pytest.raises(RecordError) as excinfo:
        decode_node_record(bytes(upper))
    assert reason(excinfo) is RefusalReason.BAD_NAME


def test_unsupported_version_and_type() -> None:
    data = bytearray(node_record().encode())
    data[1] = 2
    with pytest.raises(RecordError) as excinfo:
        decode_record(bytes(data))
    assert reason(excinfo) is RefusalReason.UNSUPPORTED_VERSION
    with pytest.raises(RecordError) as excinfo:
        decode_record(b"\x07" + bytes(data[1:]))
    assert reason(excinfo) is RefusalReason.MALFORMED


def test_someone_elses_key_name_is_refused() -> None:
    from gossipmesh.names import key_name

    with pytest.raises(RecordError) as excinfo:
        node_record(name=key_name(BOB.node_id))
    assert reason(excinfo) is RefusalReason.BAD_NAME
    assert node_record(name=key_name(ALICE.node_id)).name.startswith("gm-")


def test_limits_are_oversized() -> None:
    too_many = tuple(
        Endpoint(EndpointKind.HOST, "10.0.0.1", port) for port in range(1, MAX_ENDPOINTS + 2)
    )
    with pytest.raises(RecordError) as excinfo:
        node_record(endpoints=too_many)
    assert reason(excinfo) is RefusalReason.OVERSIZED
    with pytest.raises(RecordError) as excinfo:
        node_record(extensions=((1, bytes(MAX_RECORD_SIZE - 100)),)).encode()
    assert reason(excinfo) is RefusalReason.OVERSIZED
    with pytest.raises(RecordError) as excinfo:
        decode_record(bytes([1]) + bytes(MAX_RECORD_SIZE))
    assert reason(excinfo) is RefusalReason.OVERSIZED


def test_validate_signature() -> None:
    record = node_record()
    forged = replace(record, signature=bytes([record.signature[0] ^ 1]) + record.signature[1:])
    with pytest.raises(RecordError) as excinfo:
        validate(forged, NOW)
    assert reason(excinfo) is RefusalReason.BAD_SIGNATURE
    # Changing any signed field (here: dropping the endpoints) breaks the signature.
    with pytest.raises(RecordError) as excinfo:
        validate(replace(record, endpoints=()), NOW)
    assert reason(excinfo) is RefusalReason.BAD_SIGNATURE


def test_validate_times() -> None:
    record = node_record()
    with pytest.raises(RecordError) as excinfo:
        validate(record, record.expires_at)
    assert reason(excinfo) is RefusalReason.EXPIRED
    assert validate(record, NOW - MAX_CLOCK_SKEW) is record  # at the edge of the skew
    with pytest.raises(RecordError) as excinfo:
        validate(record, NOW - MAX_CLOCK_SKEW - 1)
    assert reason(excinfo) is RefusalReason.FROM_FUTURE
    long_lived = node_record(expires_at=NOW + MAX_LIFETIME + 1)
    with pytest.raises(RecordError) as excinfo:
        validate(long_lived, NOW)
    assert reason(excinfo) is RefusalReason.LIFETIME_TOO_LONG


def test_validate_sequence_against_held() -> None:
    old, new = node_record(sequence=5), node_record(sequence=6)
    assert validate(new, NOW, held=old) is new
    assert validate(old, NOW, held=old) is old  # the same bytes again: a refresh
    with pytest.raises(RecordError) as excinfo:
        validate(old, NOW, held=new)
    assert reason(excinfo) is RefusalReason.STALE_SEQUENCE
    equivocation = node_record(sequence=6, endpoints=())
    with pytest.raises(RecordError) as excinfo:
        validate(equivocation, NOW, held=new)
    assert reason(excinfo) is RefusalReason.STALE_SEQUENCE
    # An expired held record no longer blocks an older sequence.
    expired_held = node_record(sequence=9, issued_at=NOW - 100, expires_at=NOW - 1)
    assert validate(old, NOW, held=expired_held) is old


def test_name_records_follow_the_name_rule() -> None:
    first = name_record(ALICE, claimed_since=NOW - 100)
    second = name_record(BOB, claimed_since=NOW - 10)
    with pytest.raises(RecordError) as excinfo:
        validate(second, NOW, held=first)
    assert reason(excinfo) is RefusalReason.NAME_TAKEN
    assert validate(first, NOW, held=second) is first


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_RECORD_SIZE + 8))
def test_random_bytes_give_a_record_or_record_error(data: bytes) -> None:
    try:
        record = decode_record(data)
    except RecordError as exc:
        assert isinstance(exc.reason, RefusalReason)
    else:
        assert record.encode() == data


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_records_give_a_record_or_record_error(data: st.DataObject) -> None:
    """Random bytes rarely parse; flipping bytes of valid records reaches deeper."""
    base = bytearray(data.draw(st.sampled_from([node_record().encode(), name_record().encode()])))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(base) - 1))
        base[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    candidate = bytes(base[:cut]) if data.draw(st.booleans()) else bytes(base)
    try:
        record = decode_record(candidate)
    except RecordError as exc:
        assert isinstance(exc.reason, RefusalReason)
        return
    assert record.encode() == candidate
    try:
        validate(record, NOW)
    except RecordError as exc:
        assert isinstance(exc.reason, RefusalReason)


endpoints = st.builds(
    Endpoint,
    st.integers(1, 255),
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
    st.integers(1, 65535),
    st.binary(max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(
    sequence=st.integers(0, 2**64 - 1),
    issued=st.integers(0, 2**63),
    life=st.integers(1, 2**20),
    counter=st.integers(0, 65535),
    flags=st.integers(0, 0xFFFF),
    eps=st.lists(endpoints, max_size=MAX_ENDPOINTS),
    name=st.sampled_from(["", "a", "db-01", "x" * 63]),
)
def test_any_valid_node_record_round_trips(
    sequence: int,
    issued: int,
    life: int,
    counter: int,
    flags: int,
    eps: list[Endpoint],
    name: str,
) -> None:
    record = NodeRecord(
        public_key=ALICE.public_key,
        sequence=sequence,
        issued_at=issued,
        expires_at=issued + life,
        ipv4_counter=counter,
        flags=flags,
        name=name,
        name_claimed_since=issued if name else 0,
        endpoints=tuple(eps),
    ).signed(ALICE)
    decoded = decode_record(record.encode())
    assert decoded == record and decoded.signature_valid()
