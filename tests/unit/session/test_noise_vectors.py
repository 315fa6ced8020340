"""The Noise layer against the published cacophony vector for IKpsk2/25519/ChaChaPoly/BLAKE2s.

The vector uses its own prologue and payloads; WireGuard only fixes those, so
passing it shows the handshake chain (mix-hash, mix-key, psk, split) is Noise's.
"""

from __future__ import annotations

import json
from pathlib import Path

from gossipmesh.session import crypto, noise

VECTOR = json.loads((Path(__file__).parent / "noise_vectors.json").read_text())


def _hex(name: str) -> bytes:
    return bytes.fromhex(VECTOR[name])


def test_vector_handshake_and_transport() -> None:
    prologue = _hex("prologue")
    psk = _hex("psk")
    i_static = _hex("init_static")
    i_eph = _hex("init_ephemeral")
    r_static = _hex("resp_static")
    r_eph = _hex("resp_ephemeral")
    i_static_pub = crypto.public_key(i_static)
    r_static_pub = crypto.public_key(r_static)
    assert r_static_pub == _hex("resp_static_public")
    messages = [
        (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in VECTOR["messages"]
    ]

    # -> e, es, s, ss, {payload}
    start = noise.initial_transcript(r_static_pub, prologue)
    i_state, parts = noise.write_initiation(
        start,
        i_static_pub,
        i_eph,
        crypto.public_key(i_eph),
        r_static_pub,
        crypto.dh(i_static, r_static_pub),
        messages[0][0],
    )
    wire0 = parts.ephemeral + parts.encrypted_static + parts.encrypted_payload
    assert wire0 == messages[0][1]

    # The responder reads it back.
    received = noise.InitiationParts(wire0[:32], wire0[32:80], wire0[80:])
    middle, initiator_static = noise.read_initiation_static(start, r_static, received)
    assert initiator_static == i_static_pub
    r_state, payload0 = noise.read_initiation_payload(
        middle, crypto.dh(r_static, initiator_static), received
    )
    assert payload0 == messages[0][0]
    assert r_state == i_state

    # <- e, ee, se, psk, {payload}
    r_final, encrypted = noise.write_response(
        r_state,
        r_eph,
        crypto.public_key(r_eph),
        received.ephemeral,
        i_static_pub,
        psk,
        messages[1][0],
    )
    wire1 = crypto.public_key(r_eph) + encrypted
    assert wire1 == messages[1][1]
    i_final, payload1 = noise.read_response(i_state, i_eph, i_static, wire1[:32], wire1[32:], psk)
    assert payload1 == messages[1][0]
    assert i_final == r_final

    # Transport: alternate directions, nonces from 0, empty associated data.
    i_send, r_send = noise.split(i_final)
    counters = [0, 0]
    for number, (payload, ciphertext) in enumerate(messages[2:]):
        direction = number % 2
        key = i_send if direction == 0 else r_send
        assert crypto.aead_encrypt(key, counters[direction], payload, b"") == ciphertext
        counters[direction] += 1
