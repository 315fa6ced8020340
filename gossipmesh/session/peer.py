"""Per-peer session state: keys in use, the handshake in flight, timer deadlines.

A peer holds its keypairs and each keypair knows its peer, so both live here
(two modules would import each other).

A plain record that `SessionManager` drives; it holds no logic of its own
beyond naming its next deadline, so the manager's rules read in one place.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gossipmesh.session.cookies import CookieJar
from gossipmesh.session.messages import transport_prefix
from gossipmesh.session.noise import Transcript
from gossipmesh.session.timers import MAX_STAGED_PACKETS, Timers

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


class PendingHandshake:
    """Our initiation awaiting its response; found by its sender index."""

    __slots__ = ("ephemeral_private", "local_index", "peer", "transcript")

    def __init__(
        self, peer: Peer, local_index: int, transcript: Transcript, ephemeral_private: bytes
    ) -> None:
        self.peer = peer
        self.local_index = local_index
        self.transcript = transcript
        self.ephemeral_private = ephemeral_private


class Peer:
    """One remote node, known by its static X25519 public key."""

    __slots__ = (
        "added_at",
        "cookie_jar",
        "current",
        "endpoint",
        "handshake_attempts",
        "initial_transcript",
        "keepalive_from",
        "last_handshake_completed",
        "last_handshake_sent",
        "last_initiation_consumed",
        "last_initiation_timestamp",
        "last_sent",
        "last_timestamp_sent",
        "new_handshake_from",
        "new_handshake_jitter",
        "next",
        "pending",
        "persistent_keepalive",
        "preshared_key",
        "previous",
        "public_key",
        "retransmit_at",
        "scheduled_at",
        "sent_last_minute_handshake",
        "staged",
        "static_static",
        "zero_keys_at",
    )

    def __init__(
        self,
        public_key: bytes,
        preshared_key: bytes,
        static_static: bytes,
        initial_transcript: Transcript,
        endpoint: Hashable | None,
        persistent_keepalive: float | None,
        added_at: float,
    ) -> None:
        self.public_key = public_key
        self.preshared_key = preshared_key
        self.static_static = static_static
        """DH(our static, their static): the same for every handshake, so computed once."""
        self.initial_transcript = initial_transcript
        self.endpoint = endpoint
        self.persistent_keepalive = persistent_keepalive
        self.added_at = added_at
        self.cookie_jar = CookieJar(public_key)
        self.pending: PendingHandshake | None = None
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None
        """Responder's keypair until the initiator's first transport message confirms it."""
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        self.last_initiation_timestamp = bytes(12)
        self.last_initiation_consumed: float | None = None
        self.last_timestamp_sent = bytes(12)
        self.last_handshake_sent: float | None = None
        self.last_handshake_completed: float | None = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False
        self.retransmit_at: float | None = None
        self.keepalive_from: float | None = None
        """First data received since we last sent: a keepalive is due KEEPALIVE after it."""
        self.new_handshake_from: float | None = None
        """First data sent since we last received: silence after it means a dead session."""
        self.new_handshake_jitter = 0.0
        self.zero_keys_at: float | None = None
        self.last_sent: float | None = None
        self.scheduled_at = math.inf
        """The earliest time this peer is queued in the manager's timer heap."""

    def keypairs(self) -> tuple[Keypair, ...]:
        return tuple(kp for kp in (self.current, self.previous, self.next) if kp is not None)

    def next_deadline(self, timers: Timers) -> float:
        deadline = math.inf
        if self.retransmit_at is not None:
            deadline = self.retransmit_at
        if self.keepalive_from is not None:
            deadline = min(deadline, self.keepalive_from + timers.keepalive_timeout)
        if self.new_handshake_from is not None:
            deadline = min(
                deadline,
                self.new_handshake_from
                + timers.keepalive_timeout
                + timers.rekey_timeout
                + self.new_handshake_jitter,
            )
        if self.zero_keys_at is not None:
            deadline = min(deadline, self.zero_keys_at)
        if self.persistent_keepalive:
            since = self.last_sent if self.last_sent is not None else self.added_at
            deadline = min(deadline, since + self.persistent_keepalive)
        return deadline
