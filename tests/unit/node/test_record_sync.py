"""Records handed over by neighbours: copies we hold are dropped before the signature
check (the expensive part), while anything newer is still verified."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gossipmesh.node.messages import (
    MAX_MESSAGE_BYTES,
    MalformedNodeMessage,
    decode_digest,
    decode_record_request,
    encode_digest,
)
from gossipmesh.wire import PayloadKind

from .harness import WALL_OFFSET, CoreNet
from .test_core import CONVERGE, run_until_true


def test_a_held_copy_is_dropped_unverified_and_a_newer_one_still_verified() -> None:
    net = CoreNet(2)
    net.start()
    a, b = net.members
    run_until_true(net, lambda: a.core.directory.record(b.identity.node_id) is not None, CONVERGE)
    held = a.core.directory.record(b.identity.node_id)
    assert held is not None
    counters = a.core.counters
    not_newer, refused = counters.records_not_newer, counters.records_refused
    wall = net.now + WALL_OFFSET

    assert a.core.records.accept(held.encode(), wall) is None
    assert counters.records_not_newer == not_newer + 1 and counters.records_refused == refused

    forged = replace(held, sequence=held.sequence + 1, name="mallory")  # old signature
    assert a.core.records.accept(forged.encode(), wall) is None
    assert counters.records_refused == refused + 1
    assert a.core.directory.record(b.identity.node_id) == held

    newer = replace(held, sequence=held.sequence + 1).signed(b.identity)
    assert a.core.records.accept(newer.encode(), wall) == newer
    assert a.core.directory.record(b.identity.node_id) == newer


def test_a_new_neighbour_gets_a_digest_and_is_asked_only_for_what_it_has_newer() -> None:
    net = CoreNet(3)
    net.start()
    a, b, c = net.members
    run_until_true(net, lambda: len(a.core.directory) == 3, CONVERGE)
    sent: list[tuple[bytes, bytes]] = []
    a.core.records._send_control = lambda node_id, payload: sent.append((node_id, payload))

    a.core.records.hand_over(b.identity.node_id)
    assert sent and all(payload[0] == PayloadKind.RECORD_DIGEST for _, payload in sent)
    entries = [entry for _, payload in sent for entry in decode_digest(payload)]
    assert sorted(entries) == sorted((r.node_id, r.sequence) for r in a.core.directory.records())

    sent.clear()
    held_c = a.core.directory.record(c.identity.node_id)
    assert held_c is not None
    stranger = bytes(range(20))
    a.core.records.on_digest(
        b.identity.node_id,
        [
            (c.identity.node_id, held_c.sequence),  # the same: not asked for
            (b.identity.node_id, 0),  # older than ours: not asked for
            (a.identity.node_id, 10**6),  # our own: never
            (stranger, 1),  # unknown to us: asked for
        ],
    )
    assert [(node_id, decode_record_request(payload)) for node_id, payload in sent] == [
        (b.identity.node_id, [stranger])
    ]


def test_digest_codec_round_trips_and_refuses_garbage() -> None:
    entries = [(bytes([i]) * 20, i * 7) for i in range(100)]
    messages = encode_digest(entries)
    assert len(messages) == 3 and all(len(m) <= MAX_MESSAGE_BYTES for m in messages)
    assert [e for m in messages for e in decode_digest(m)] == entries
    with pytest.raises(MalformedNodeMessage):
        decode_digest(messages[0][:-1])
    with pytest.raises(MalformedNodeMessage):
        decode_digest(messages[0] + b"x")
    with pytest.raises(MalformedNodeMessage):
        decode_digest(bytes([PayloadKind.RECORD_DIGEST, 255]) + bytes(255 * 28))
