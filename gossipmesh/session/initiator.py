"""Starting handshakes: the initiation message, its timestamp and its retry timer.

Apart from the rest of the handshake code because sending (no session, or
a session due for rekey) and the timers start handshakes too.
"""

from __future__ import annotations

from gossipmesh.session import noise
from gossipmesh.session.crypto import AuthenticationError, RandomSource, generate_keypair, tai64n
from gossipmesh.session.messages import build_initiation_body
from gossipmesh.session.outbox import Outbox
from gossipmesh.session.peer import Peer, PendingHandshake
from gossipmesh.session.peers import PeerTable
from gossipmesh.session.schedule import PeerSchedule
from gossipmesh.session.stats import SessionStats
from gossipmesh.session.timers import Timers


class Initiator:
    """Queues initiations, at most one per REKEY_TIMEOUT per peer unless retrying."""

    def __init__(
        self,
        static_public: bytes,
        table: PeerTable,
        schedule: PeerSchedule,
        outbox: Outbox,
        stats: SessionStats,
        timers: Timers,
        random_bytes: RandomSource,
        wall_clock_offset: float,
    ) -> None:
        self._static_public = static_public
        self._table = table
        self._index = table.index
        self._schedule = schedule
        self._outbox = outbox
        self._stats = stats
        self._timers = timers
        self._random_bytes = random_bytes
        self._wall_clock_offset = wall_clock_offset

    def initiate(self, peer: Peer, now: float, *, retry: bool) -> None:
        """`retry` is the retransmit timer's resend: it keeps the attempt count."""
        if not retry:
            peer.handshake_attempts = 0
            if (
                peer.last_handshake_sent is not None
                and now - peer.last_handshake_sent < self._timers.rekey_timeout
            ):
                return
        endpoint = peer.endpoint
        if endpoint is None:
            self._stats.send_without_endpoint += 1
            return
        peer.last_handshake_sent = now
        self._table.forget_pending(peer)
        ephemeral_private, ephemeral_public = generate_keypair(self._random_bytes)
        timestamp = tai64n(now + self._wall_clock_offset)
        if timestamp <= peer.last_timestamp_sent:
            timestamp = (int.from_bytes(peer.last_timestamp_sent, "big") + 1).to_bytes(12, "big")
        peer.last_timestamp_sent = timestamp
        try:
            transcript, parts = noise.write_initiation(
                peer.initial_transcript,
                self._static_public,
                ephemeral_private,
                ephemeral_public,
                peer.public_key,
                peer.static_static,
                timestamp,
            )
        except AuthenticationError:  # pragma: no cover - peer keys are checked in add_peer
            return
        local_index = self._table.new_index()
        pending = PendingHandshake(peer, local_index, transcript, ephemeral_private)
        self._index[local_index] = pending
        peer.pending = pending
        body = build_initiation_body(
            local_index, parts.ephemeral, parts.encrypted_static, parts.encrypted_payload
        )
        self._outbox.datagrams.append((peer.cookie_jar.seal(body, now), endpoint))
        self._stats.initiations_sent += 1
        peer.retransmit_at = now + self._timers.rekey_timeout + self._schedule.jitter()
        self._schedule.schedule(peer, peer.retransmit_at)
