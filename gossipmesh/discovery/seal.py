"""Sealing of DHT datagrams with the network's key: outsiders can neither read nor poison the DHT.

A sealed datagram is `MessageType.DHT` (one byte), a random 12-byte nonce, and
the ChaCha20-Poly1305 ciphertext of one rpcudp datagram under
`NetworkSecret.dht_key`, with the type byte as associated data. Random nonces
are safe for the 2^32 datagrams per key that the 96-bit birthday bound allows;
a network that sends more should rotate its secret. Replayed datagrams open
fine; that is harmless because rpcudp ignores responses it is not waiting for
and storage refuses records whose sequence is not newer than the one held.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gossipmesh.wire import MessageType

_HEADER: Final = bytes([MessageType.DHT])
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
SEAL_OVERHEAD: Final = len(_HEADER) + NONCE_SIZE + TAG_SIZE


class DatagramSeal:
    """Seals and opens DHT datagrams for one network."""

    def __init__(self, dht_key: bytes) -> None:
        self._aead = ChaCha20Poly1305(dht_key)

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return _HEADER + nonce + self._aead.encrypt(nonce, plaintext, _HEADER)

    def open(self, datagram: bytes) -> bytes | None:
        """The plaintext, or None for anything not sealed with this network's key."""
        if len(datagram) < SEAL_OVERHEAD or datagram[:1] != _HEADER:
            return None
        nonce = datagram[1 : 1 + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, datagram[1 + NONCE_SIZE :], _HEADER)
        except InvalidTag:
            return None


REPLAY_WINDOW = 60.0
"""Seconds a nonce is remembered at least (at most twice that)."""
MAX_REMEMBERED_NONCES = 32768


class ReplayFilter:
    """Drops sealed datagrams whose nonce was seen recently.

    An eavesdropper cannot forge sealed datagrams but can resend captured
    ones, with a spoofed source, to make members answer a victim (a find_node
    answer is ~15 times its request). Remembering nonces for one to two
    windows leaves such a replay at most one answer per window. Only opened
    datagrams are remembered, so outsiders cannot fill the memory.
    """

    def __init__(
        self, window: float = REPLAY_WINDOW, capacity: int = MAX_REMEMBERED_NONCES
    ) -> None:
        self._window = window
        self._capacity = capacity
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
        self._rotate_at: float | None = None

    def is_replay(self, datagram: bytes, now: float) -> bool:
        """Whether this (opened) datagram's nonce was seen; remembers it if not."""
        nonce = datagram[1 : 1 + NONCE_SIZE]
        if self._rotate_at is None:
            self._rotate_at = now + self._window
        if now >= self._rotate_at or len(self._current) >= self._capacity:
            self._previous, self._current = self._current, set()
            self._rotate_at = now + self._window
        if nonce in self._current or nonce in self._previous:
            return True
        self._current.add(nonce)
        return False
