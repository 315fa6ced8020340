"""The IKpsk2 handshake as a chain of pure functions over (chaining key, hash).

    <- s
    ...
    -> e, es, s, ss, {payload}
    <- e, ee, se, psk, {payload}

WireGuard fixes the prologue (its identifier) and the payloads (a TAI64N
timestamp, then nothing); the functions take both as arguments so that the
published Noise test vectors, with their own prologue and payloads, exercise
exactly this code. Every failure is an `AuthenticationError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossipmesh.session.crypto import (
    CONSTRUCTION,
    IDENTIFIER,
    KEY_SIZE,
    TAG_SIZE,
    aead_decrypt,
    aead_encrypt,
    dh,
    hash_bytes,
    kdf1,
    kdf2,
    kdf3,
)

INITIAL_CHAINING_KEY = hash_bytes(CONSTRUCTION)
_WIREGUARD_INITIAL_HASH = hash_bytes(INITIAL_CHAINING_KEY, IDENTIFIER)


@dataclass(frozen=True, slots=True)
class Transcript:
    """Noise's symmetric state between messages: chaining key and handshake hash."""

    chaining_key: bytes
    hash: bytes


def initial_transcript(responder_static: bytes, prologue: bytes = IDENTIFIER) -> Transcript:
    """Both sides start from the protocol name, the prologue and the responder's static key."""
    if prologue == IDENTIFIER:
        start = _WIREGUARD_INITIAL_HASH
    else:
        start = hash_bytes(INITIAL_CHAINING_KEY, prologue)
    return Transcript(INITIAL_CHAINING_KEY, hash_bytes(start, responder_static))


@dataclass(frozen=True, slots=True)
class InitiationParts:
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_payload: bytes


def write_initiation(
    start: Transcript,
    static_public: bytes,
    ephemeral_private: bytes,
    ephemeral_public: bytes,
    responder_static: bytes,
    static_static: bytes,
    payload: bytes,
) -> tuple[Transcript, InitiationParts]:
    """-> e, es, s, ss, {payload}. `static_static` is DH(s_i, S_r), cached per peer."""
    ck = kdf1(start.chaining_key, ephemeral_public)
    h = hash_bytes(start.hash, ephemeral_public)
    ck, key = kdf2(ck, dh(ephemeral_private, responder_static))
    encrypted_static = aead_encrypt(key, 0, static_public, h)
    h = hash_bytes(h, encrypted_static)
    ck, key = kdf2(ck, static_static)
    encrypted_payload = aead_encrypt(key, 0, payload, h)
    h = hash_bytes(h, encrypted_payload)
    return Transcript(ck, h), InitiationParts(ephemeral_public, encrypted_static, encrypted_payload)


def read_initiation_static(
    start: Transcript, static_private: bytes, parts: InitiationParts
) -> tuple[Transcript, bytes]:
    """The responder's first half: recover the initiator's static key (who is this?)."""
    if len(parts.encrypted_static) != KEY_SIZE + TAG_SIZE:
        raise ValueError("encrypted static key has the wrong size")
    ck = kdf1(start.chaining_key, parts.ephemeral)
    h = hash_bytes(start.hash, parts.ephemeral)
    ck, key = kdf2(ck, dh(static_private, parts.ephemeral))
    initiator_static = aead_decrypt(key, 0, parts.encrypted_static, h)
    h = hash_bytes(h, parts.encrypted_static)
    return Transcript(ck, h), initiator_static


def read_initiation_payload(
    middle: Transcript, static_static: bytes, parts: InitiationParts
) -> tuple[Transcript, bytes]:
    """The responder's second half, once the peer (and its cached DH) is known."""
    ck, key = kdf2(middle.chaining_key, static_static)
    payload = aead_decrypt(key, 0, parts.encrypted_payload, middle.hash)
    h = hash_bytes(middle.hash, parts.encrypted_payload)
    return Transcript(ck, h), payload


def write_response(
    after_initiation: Transcript,
    ephemeral_private: bytes,
    ephemeral_public: bytes,
    initiator_ephemeral: bytes,
    initiator_static: bytes,
    preshared_key: bytes,
    payload: bytes,
) -> tuple[Transcript, bytes]:
    """<- e, ee, se, psk, {payload}; returns the transcript and the encrypted payload."""
    ck = kdf1(after_initiation.chaining_key, ephemeral_public)
    h = hash_bytes(after_initiation.hash, ephemeral_public)
    ck = kdf1(ck, dh(ephemeral_private, initiator_ephemeral))
    ck = kdf1(ck, dh(ephemeral_private, initiator_static))
    ck, tau, key = kdf3(ck, preshared_key)
    h = hash_bytes(h, tau)
    encrypted_payload = aead_encrypt(key, 0, payload, h)
    h = hash_bytes(h, encrypted_payload)
    return Transcript(ck, h), encrypted_payload


def read_response(
    after_initiation: Transcript,
    ephemeral_private: bytes,
    static_private: bytes,
    responder_ephemeral: bytes,
    encrypted_payload: bytes,
    preshared_key: bytes,
) -> tuple[Transcript, bytes]:
    """The initiator's side of the response; a wrong preshared key fails here."""
    ck = kdf1(after_initiation.chaining_key, responder_ephemeral)
    h = hash_bytes(after_initiation.hash, responder_ephemeral)
    ck = kdf1(ck, dh(ephemeral_private, responder_ephemeral))
    ck = kdf1(ck, dh(static_private, responder_ephemeral))
    ck, tau, key = kdf3(ck, preshared_key)
    h = hash_bytes(h, tau)
    payload = aead_decrypt(key, 0, encrypted_payload, h)
    h = hash_bytes(h, encrypted_payload)
    return Transcript(ck, h), payload


def split(final: Transcript) -> tuple[bytes, bytes]:
    """(initiator->responder key, responder->initiator key)."""
    return kdf2(final.chaining_key, b"")
