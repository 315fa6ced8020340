"""Property tests: parsers raise only MalformedMessage; nothing escapes receive_datagram;
encrypt-then-decrypt round-trips; the replay window matches a simple model."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.session import messages
from gossipmesh.session.cookies import CookieChecker
from gossipmesh.session.peer import ACCEPTED, REPLAY_WINDOW, REPLAYED, TOO_OLD, Keypair
from tests.unit.session.pair import established_pair, peer_of

SETTINGS = settings(max_examples=200, deadline=None)
_, A, B = established_pair()


PARSERS: list[Callable[[bytes], Any]] = [
    messages.parse_initiation,
    messages.parse_response,
    messages.parse_cookie_reply,
    messages.parse_transport_header,
]


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(PARSERS))
def test_parsers_raise_only_malformed(data: bytes, parser: Callable[[bytes], Any]) -> None:
    with contextlib.suppress(messages.MalformedMessage):
        parser(data)


@SETTINGS
@given(st.sampled_from([1, 2, 3, 4]), st.binary(min_size=200, max_size=200))
def test_parsers_on_right_size_with_header(kind: int, noise: bytes) -> None:
    size = {1: 148, 2: 92, 3: 64, 4: 100}[kind]
    data = bytes([kind, 0, 0, 0]) + noise[: size - 4]
    parser = PARSERS[kind - 1]
    parsed = parser(data)
    assert parsed is not None


@SETTINGS
@given(st.binary(max_size=400))
def test_receive_datagram_never_raises(data: bytes) -> None:
    assert B.receive_datagram(data, "fuzz", 1.0) is None


@SETTINGS
@given(st.sampled_from([1, 2, 3, 4]), st.binary(min_size=160, max_size=160), st.integers(0, 1))
def test_receive_datagram_never_raises_on_typed_junk(kind: int, body: bytes, flip: int) -> None:
    size = {1: 148, 2: 92, 3: 64, 4: 160}[kind]
    data = bytearray([kind, 0, 0, 0]) + body[: size - 4]
    if flip:
        # Point at a receiver index that exists, so the deeper paths run.
        keypair = peer_of(B, A).current
        assert keypair is not None
        offset = 8 if kind == 2 else 4
        data[offset : offset + 4] = keypair.local_index.to_bytes(4, "little")
    assert B.receive_datagram(bytes(data), "fuzz", 1.0) is None


@SETTINGS
@given(st.binary(max_size=148))
def test_cookie_checks_never_raise(data: bytes) -> None:
    checker = CookieChecker(bytes(32), lambda n: bytes(n))
    checker.mac1_valid(data)
    checker.mac2_valid(data, ("10.0.0.1", 1), 0.0)


control_payloads = st.binary(min_size=1, max_size=1500).filter(lambda p: p[0] >> 4 not in (4, 6))


@SETTINGS
@given(st.lists(control_payloads, min_size=1, max_size=5))
def test_control_payload_round_trip(payloads: list[bytes]) -> None:
    a, b = A, B
    for payload in payloads:
        datagram = a.encrypt_for(peer_of(a, b), payload, 1.0)
        assert datagram is not None
        assert len(datagram) == 16 + len(payload) + 16  # control payloads are not padded
        opened = b.open_transport(datagram, "A", 1.0)
        assert opened is not None
        peer, received = opened
        assert peer.public_key == a.static_public
        assert received == payload


@SETTINGS
@given(st.binary(max_size=1400), st.booleans())
def test_ip_packet_round_trip(body: bytes, six: bool) -> None:
    if six:
        packet = b"\x60\x00\x00\x00" + len(body).to_bytes(2, "big") + bytes(34) + body
    else:
        total = 20 + len(body)
        packet = b"\x45\x00" + total.to_bytes(2, "big") + bytes(16) + body
    datagram = B.encrypt_for(peer_of(B, A), packet, 1.0)
    assert datagram is not None
    opened = A.open_transport(datagram, "B", 1.0)
    assert opened is not None and opened[1] == packet


@SETTINGS
@given(st.lists(st.integers(0, 3 * REPLAY_WINDOW), max_size=300))
def test_replay_window_matches_model(counters: list[int]) -> None:
    keypair = Keypair(peer_of(A, B), bytes(32), bytes(32), 1, 2, True, 0.0)
    seen: set[int] = set()
    greatest = -1
    for counter in counters:
        if counter > greatest:
            expected = ACCEPTED
        elif greatest - counter >= REPLAY_WINDOW:
            expected = TOO_OLD
        elif counter in seen:
            expected = REPLAYED
        else:
            expected = ACCEPTED
        assert keypair.accept_counter(counter) == expected
        if expected == ACCEPTED:
            seen.add(counter)
            greatest = max(greatest, counter)
