"""WireGuard's timer rules (whitepaper section 6), run when a peer's deadline passes.

Retransmit or abandon a handshake, send a passive or persistent keepalive,
rekey a session that went quiet after we sent, zero old keys. Sending keeps
these deadlines up to date (`Transport`); this only acts on them.
"""

from __future__ import annotations

from gossipmesh.session.events import HandshakeAbandoned
from gossipmesh.session.initiator import Initiator
from gossipmesh.session.outbox import Outbox
from gossipmesh.session.peer import Peer
from gossipmesh.session.peers import PeerTable
from gossipmesh.session.schedule import PeerSchedule
from gossipmesh.session.stats import SessionStats
from gossipmesh.session.timers import Timers
from gossipmesh.session.transport import Transport


class PeerTimers:
    """Fires due peers' timers, then queues each for its next deadline."""

    def __init__(
        self,
        table: PeerTable,
        schedule: PeerSchedule,
        initiator: Initiator,
        transport: Transport,
        outbox: Outbox,
        stats: SessionStats,
        timers: Timers,
    ) -> None:
        self._table = table
        self._schedule = schedule
        self._initiator = initiator
        self._transport = transport
        self._outbox = outbox
        self._stats = stats
        self._timers = timers

    def handle_timer(self, now: float) -> None:
        pop_due = self._schedule.pop_due
        while (peer := pop_due(now)) is not None:
            self._run(peer, now)

    def _run(self, peer: Peer, now: float) -> None:
        timers = self._timers
        initiate = self._initiator.initiate
        if peer.retransmit_at is not None and now >= peer.retransmit_at:
            peer.retransmit_at = None
            if peer.handshake_attempts > timers.max_handshake_attempts:
                self._abandon_handshake(peer, now)
            else:
                peer.handshake_attempts += 1
                initiate(peer, now, retry=True)
        if (
            peer.keepalive_from is not None
            and now >= peer.keepalive_from + timers.keepalive_timeout
        ):
            peer.keepalive_from = None
            self._transport.send_keepalive(peer, now)
        if peer.new_handshake_from is not None and now >= (
            peer.new_handshake_from
            + timers.keepalive_timeout
            + timers.rekey_timeout
            + peer.new_handshake_jitter
        ):
            peer.new_handshake_from = None
            peer.new_handshake_jitter = self._schedule.jitter()
            initiate(peer, now, retry=False)
        if peer.persistent_keepalive:
            since = peer.last_sent if peer.last_sent is not None else peer.added_at
            if now >= since + peer.persistent_keepalive:
                self._transport.send_keepalive(peer, now)
                if peer.last_sent is None or peer.last_sent < now:
                    peer.last_sent = now  # no session yet: try again one interval later
        if peer.zero_keys_at is not None and now >= peer.zero_keys_at:
            peer.zero_keys_at = None
            self._table.clear_keys(peer)
        self._schedule.reschedule(peer)

    def _abandon_handshake(self, peer: Peer, now: float) -> None:
        """REKEY_ATTEMPT_TIME without an answer: drop what waited, zero keys later."""
        self._table.forget_pending(peer)
        peer.staged.clear()
        self._stats.handshake_attempts_abandoned += 1
        self._outbox.events.append(HandshakeAbandoned(peer.public_key))
        if peer.zero_keys_at is None:
            peer.zero_keys_at = now + self._timers.zero_keys_after
