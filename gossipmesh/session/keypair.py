"""One direction-pair of transport keys, with its counters and anti-replay window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gossipmesh.session.messages import transport_prefix

if TYPE_CHECKING:
    from gossipmesh.session.peer import Peer

REPLAY_WINDOW = 8192
"""Packets that may arrive out of order; the issue asks for at least 2,048 (WireGuard: 8,192)."""
WINDOW_MASK = (1 << REPLAY_WINDOW) - 1

ACCEPTED = 0
REPLAYED = 1
TOO_OLD = 2


class Keypair:
    """Keys from one handshake. Sending uses `send_counter`; receiving, the window."""

    __slots__ = (
        "created",
        "is_initiator",
        "local_index",
        "peer",
        "prefix",
        "receiving",
        "remote_index",
        "replay_bitmap",
        "replay_greatest",
        "send_counter",
        "sending",
    )

    def __init__(
        self,
        peer: Peer,
        send_key: bytes,
        receive_key: bytes,
        local_index: int,
        remote_index: int,
        is_initiator: bool,
        created: float,
    ) -> None:
        self.peer = peer
        self.sending = ChaCha20Poly1305(send_key)
        self.receiving = ChaCha20Poly1305(receive_key)
        self.local_index = local_index
        self.remote_index = remote_index
        self.prefix = transport_prefix(remote_index)
        self.is_initiator = is_initiator
        self.created = created
        self.send_counter = 0
        self.replay_greatest = -1
        self.replay_bitmap = 0
        """Bit i set: counter `replay_greatest - i` was received."""

    def accept_counter(self, counter: int) -> int:
        """Mark an authenticated counter received: ACCEPTED, REPLAYED or TOO_OLD."""
        greatest = self.replay_greatest
        if counter > greatest:
            shift = counter - greatest
            if shift < REPLAY_WINDOW:
                self.replay_bitmap = ((self.replay_bitmap << shift) | 1) & WINDOW_MASK
            else:
                self.replay_bitmap = 1
            self.replay_greatest = counter
            return ACCEPTED
        offset = greatest - counter
        if offset >= REPLAY_WINDOW:
            return TOO_OLD
        bit = 1 << offset
        if self.replay_bitmap & bit:
            return REPLAYED
        self.replay_bitmap |= bit
        return ACCEPTED
