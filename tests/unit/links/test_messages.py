"""LINK_OFFER / LINK_ACCEPT / LINK_DECLINE: round trips and every malformed form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipmesh.links.messages import (
    VERSION,
    DeclineReason,
    LinkAccept,
    LinkDecline,
    LinkOffer,
    MalformedLinkMessage,
    decode_link_message,
    encode_accept,
    encode_decline,
    encode_offer,
)
from gossipmesh.wire import PayloadKind

TOKEN = bytes(range(16))
OFFER = LinkOffer(TOKEN, b"\xaa" * 32, b"\xbb" * 32)
ACCEPT = LinkAccept(TOKEN, 51820)
DECLINE = LinkDecline(TOKEN, DeclineReason.BUSY)


def test_offer_layout() -> None:
    payload = encode_offer(OFFER)
    assert payload == bytes([PayloadKind.LINK_OFFER, VERSION]) + TOKEN + b"\xaa" * 32 + b"\xbb" * 32
    assert len(payload) == 82


def test_accept_layout() -> None:
    assert encode_accept(ACCEPT) == bytes([PayloadKind.LINK_ACCEPT]) + TOKEN + b"\xca\x6c"


def test_decline_layout() -> None:
    assert encode_decline(DECLINE) == bytes([PayloadKind.LINK_DECLINE]) + TOKEN + b"\x03"


@given(
    token=st.binary(min_size=16, max_size=16),
    to_acceptor=st.binary(min_size=32, max_size=32),
    to_connector=st.binary(min_size=32, max_size=32),
)
def test_offer_round_trip(token: bytes, to_acceptor: bytes, to_connector: bytes) -> None:
    offer = LinkOffer(token, to_acceptor, to_connector)
    assert decode_link_message(encode_offer(offer)) == offer


@given(token=st.binary(min_size=16, max_size=16), port=st.integers(1, 0xFFFF))
def test_accept_round_trip(token: bytes, port: int) -> None:
    accept = LinkAccept(token, port)
    assert decode_link_message(encode_accept(accept)) == accept


@pytest.mark.parametrize("reason", list(DeclineReason))
def test_decline_round_trip(reason: DeclineReason) -> None:
    decoded = decode_link_message(encode_decline(LinkDecline(TOKEN, reason)))
    assert decoded == LinkDecline(TOKEN, reason)
    assert isinstance(decoded, LinkDecline) and type(decoded.reason) is DeclineReason


GOOD = [encode_offer(OFFER), encode_accept(ACCEPT), encode_decline(DECLINE)]


@pytest.mark.parametrize("payload", GOOD)
def test_one_byte_more_or_less_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedLinkMessage):
        decode_link_message(payload[:-1])
    with pytest.raises(MalformedLinkMessage):
        decode_link_message(payload + b"\x00")


@pytest.mark.parametrize("payload", GOOD)
def test_the_kind_byte_alone_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedLinkMessage):
        decode_link_message(payload[:1])


def test_empty_payload_is_malformed() -> None:
    with pytest.raises(MalformedLinkMessage):
        decode_link_message(b"")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_offer_version_is_malformed(version: int) -> None:
    payload = bytearray(encode_offer(OFFER))
    payload[1] = version
    with pytest.raises(MalformedLinkMessage, match="version"):
        decode_link_message(bytes(payload))


def test_accept_of_port_zero_is_malformed() -> None:
    payload = bytes([PayloadKind.LINK_ACCEPT]) + TOKEN + b"\x00\x00"
    with pytest.raises(MalformedLinkMessage, match="port 0"):
        decode_link_message(payload)


@pytest.mark.parametrize("reason", [0, 4, 255])
def test_unknown_decline_reason_is_malformed(reason: int) -> None:
    payload = bytes([PayloadKind.LINK_DECLINE]) + TOKEN + bytes([reason])
    with pytest.raises(MalformedLinkMessage, match="reason"):
        decode_link_message(payload)


@pytest.mark.parametrize(
    "kind", [0x00, PayloadKind.ECHO_REQUEST, PayloadKind.ECHO_REPLY, 0x1D, 0xFF]
)
def test_unknown_kind_is_malformed(kind: int) -> None:
    for good in GOOD:
        with pytest.raises(MalformedLinkMessage, match="kind"):
            decode_link_message(bytes([kind]) + good[1:])


@given(st.binary(max_size=100))
def test_any_bytes_decode_or_raise_malformed(payload: bytes) -> None:
    try:
        message = decode_link_message(payload)
    except MalformedLinkMessage:
        return
    if isinstance(message, LinkOffer):
        again = encode_offer(message)
    elif isinstance(message, LinkAccept):
        again = encode_accept(message)
    else:
        again = encode_decline(message)
    assert again == payload
