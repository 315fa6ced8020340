"""The data path: transport datagrams sealed and opened, and what sending starts.

`SessionManager` binds `encrypt_for`, `encrypt_many`, `open_transport` and
`open_many` straight from here, so a packet costs no extra Python call. The
common cases are inlined (the replay window, padding) for the same reason.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from cryptography.exceptions import InvalidTag

from gossipmesh.session.events import EndpointChanged, HandshakeCompleted
from gossipmesh.session.initiator import Initiator
from gossipmesh.session.messages import MAX_TRANSPORT_SIZE, TRANSPORT_MINIMUM_SIZE
from gossipmesh.session.outbox import Outbox
from gossipmesh.session.peer import ACCEPTED, REPLAY_WINDOW, REPLAYED, WINDOW_MASK, Keypair, Peer
from gossipmesh.session.peers import PeerTable
from gossipmesh.session.schedule import PeerSchedule
from gossipmesh.session.stats import SessionStats
from gossipmesh.session.timers import REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES, Timers

_NONCE_PREFIX = b"\x00\x00\x00\x00"
_PADDING = tuple(bytes(n) for n in range(16))


class Transport:
    """Seals and opens transport messages, stages payloads until a session exists."""

    def __init__(
        self,
        table: PeerTable,
        schedule: PeerSchedule,
        initiator: Initiator,
        outbox: Outbox,
        stats: SessionStats,
        timers: Timers,
        mtu: int | None,
    ) -> None:
        # Everything the per-packet code reads is one attribute away.
        self._index = table.index
        self._drop = table.drop
        self._schedule = schedule.schedule
        self._reschedule = schedule.reschedule
        self._initiate = initiator.initiate
        self._outbox = outbox
        self._events = outbox.events
        self.stats = stats
        self.timers = timers
        self._reject_after_time = timers.reject_after_time
        self._rekey_after_time = timers.rekey_after_time
        self._receive_rekey_age = timers.receive_rekey_age
        self._mtu = mtu

    # --- sending --------------------------------------------------------

    def encrypt_for(self, peer: Peer, payload: bytes, now: float) -> bytes | None:
        """One transport datagram for `peer.endpoint`, or None when it had to be staged.

        When None, a handshake may have been queued: drain `datagrams_to_send`.
        """
        keypair = peer.current
        if (
            keypair is None
            or peer.endpoint is None
            or keypair.send_counter >= REJECT_AFTER_MESSAGES
            or now - keypair.created >= self._reject_after_time
        ):
            self._stage(peer, payload, now)
            return None
        counter = keypair.send_counter
        keypair.send_counter = counter + 1
        size = len(payload)
        # Only IP packets are padded (WireGuard's rule, and their receiver strips
        # padding by the IP header's length). Control payloads travel only
        # between gossipmesh nodes and arrive exactly as sent, so their codecs
        # need no knowledge of padding.
        pad = -size & 15 if size and (payload[0] >> 4) in (4, 6) else 0
        if pad:
            mtu = self._mtu
            if mtu is not None and size + pad > mtu:
                pad = max(0, mtu - size)
            payload += _PADDING[pad]
        counter_bytes = counter.to_bytes(8, "little")
        datagram = (
            keypair.prefix
            + counter_bytes
            + keypair.sending.encrypt(_NONCE_PREFIX + counter_bytes, payload, None)
        )
        self.stats.transport_sent += 1
        self._sent(peer, keypair, counter, now, carried_data=bool(size))
        return datagram

    def encrypt_many(self, peer: Peer, packets: Sequence[bytes], now: float) -> list[bytes] | None:
        """`encrypt_for` for IP packets to one peer in one call (a super-packet's segments).

        Every packet must be an IP packet. The checks and bookkeeping run once
        for the batch; per packet there is one AEAD call. None, with nothing
        consumed, when the session cannot take the whole batch now: the caller
        then falls back to `encrypt_for` one packet at a time.
        """
        keypair = peer.current
        count = len(packets)
        if (
            keypair is None
            or peer.endpoint is None
            or keypair.send_counter + count > REJECT_AFTER_MESSAGES
            or now - keypair.created >= self._reject_after_time
        ):
            return None
        counter = keypair.send_counter
        keypair.send_counter = counter + count
        encrypt = keypair.sending.encrypt
        prefix = keypair.prefix
        mtu = self._mtu
        datagrams: list[bytes] = []
        append = datagrams.append
        for payload in packets:
            size = len(payload)
            pad = -size & 15
            if pad:
                if mtu is not None and size + pad > mtu:
                    pad = max(0, mtu - size)
                payload += _PADDING[pad]
            counter_bytes = counter.to_bytes(8, "little")
            counter += 1
            append(prefix + counter_bytes + encrypt(_NONCE_PREFIX + counter_bytes, payload, None))
        self.stats.transport_sent += count
        self._sent(peer, keypair, counter, now, carried_data=True)
        return datagrams

    def _sent(
        self, peer: Peer, keypair: Keypair, counter: int, now: float, *, carried_data: bool
    ) -> None:
        """Timer bookkeeping after sending (WireGuard section 6): no passive keepalive
        is due, data expects an answer within keepalive+rekey timeouts, and the
        initiator rekeys after REKEY_AFTER_TIME or REKEY_AFTER_MESSAGES."""
        peer.keepalive_from = None
        peer.last_sent = now
        if carried_data and peer.new_handshake_from is None:
            peer.new_handshake_from = now
            self._schedule(
                peer,
                now
                + self.timers.keepalive_timeout
                + self.timers.rekey_timeout
                + peer.new_handshake_jitter,
            )
        if keypair.is_initiator and (
            counter >= REKEY_AFTER_MESSAGES or now - keypair.created >= self._rekey_after_time
        ):
            self._initiate(peer, now, retry=False)

    def _stage(self, peer: Peer, payload: bytes, now: float) -> None:
        if len(peer.staged) == peer.staged.maxlen:
            self.stats.staged_dropped += 1
        peer.staged.append(payload)
        if peer.endpoint is None:
            self.stats.send_without_endpoint += 1
            return
        self._initiate(peer, now, retry=False)

    def send_staged(self, peer: Peer, now: float) -> None:
        """Queue what waited for a session, in order, until one needs staging again."""
        staged = list(peer.staged)
        peer.staged.clear()
        for payload in staged:
            datagram = self.encrypt_for(peer, payload, now)
            if datagram is None:
                return  # staged again, with a handshake under way
            if not payload:
                self.stats.keepalives_sent += 1
            self._outbox.datagrams.append((datagram, peer.endpoint))

    def send_keepalive(self, peer: Peer, now: float) -> None:
        """An empty transport message; staged payloads serve as one if there are any."""
        if peer.staged:
            self.send_staged(peer, now)
            return
        datagram = self.encrypt_for(peer, b"", now)
        if datagram is not None:
            self.stats.keepalives_sent += 1
            self._outbox.datagrams.append((datagram, peer.endpoint))

    def session_started(self, peer: Peer, keypair: Keypair, now: float) -> None:
        """A handshake's keypair is `peer.current`: reset its timers, send what waited.

        The initiator with nothing staged sends a keepalive: the responder may
        only send once it has seen a transport message on the new keypair.
        """
        peer.retransmit_at = None
        peer.handshake_attempts = 0
        peer.sent_last_minute_handshake = False
        peer.last_handshake_completed = now
        self.stats.handshakes_completed += 1
        self._events.append(
            HandshakeCompleted(peer.public_key, keypair.is_initiator, keypair.local_index)
        )
        if peer.staged:
            self.send_staged(peer, now)
        elif keypair.is_initiator:
            self.send_keepalive(peer, now)
        self._reschedule(peer)

    def roam(self, peer: Peer, addr: Hashable) -> None:
        """An authenticated message came from `addr`: replies now go there."""
        peer.endpoint = addr
        self.stats.endpoint_changes += 1
        self._events.append(EndpointChanged(peer.public_key, addr))

    # --- receiving ------------------------------------------------------

    def open_transport(self, data: bytes, addr: Hashable, now: float) -> tuple[Peer, bytes] | None:
        """Decrypt a transport datagram: (peer, payload) or None (refused, counted).

        IP packets come back without transport padding; control payloads are
        never padded, so they come back exactly as sent. An empty payload is a
        keepalive.
        """
        stats = self.stats
        size = len(data)
        if size < TRANSPORT_MINIMUM_SIZE or size > MAX_TRANSPORT_SIZE:
            stats.malformed += 1
            return None
        head = int.from_bytes(data[:8], "little")  # u32 type (reserved bytes zero), u32 index
        if head & 0xFFFFFFFF != 4:
            stats.unknown_type += 1
            return None
        keypair = self._index.get(head >> 32)
        if keypair is None or keypair.__class__ is not Keypair:
            stats.unknown_receiver_index += 1
            return None
        assert isinstance(keypair, Keypair)
        counter_bytes = data[8:16]
        counter = int.from_bytes(counter_bytes, "little")
        if counter >= REJECT_AFTER_MESSAGES:
            stats.transport_counter_rejected += 1
            return None
        if now - keypair.created >= self._reject_after_time:
            stats.transport_keypair_expired += 1
            return None
        try:
            payload = keypair.receiving.decrypt(_NONCE_PREFIX + counter_bytes, data[16:], None)
        except InvalidTag:
            stats.transport_authentication_failed += 1
            return None
        # The anti-replay window (Keypair.accept_counter), inlined for the common
        # in-order case; only authenticated counters ever move it.
        greatest = keypair.replay_greatest
        if counter > greatest:
            shift = counter - greatest
            keypair.replay_bitmap = (
                ((keypair.replay_bitmap << shift) | 1) & WINDOW_MASK if shift < REPLAY_WINDOW else 1
            )
            keypair.replay_greatest = counter
        else:
            verdict = keypair.accept_counter(counter)
            if verdict != ACCEPTED:
                if verdict == REPLAYED:
                    stats.transport_replayed += 1
                else:
                    stats.transport_too_old += 1
                return None
        peer = keypair.peer
        if keypair is not peer.current:
            self._received_with(peer, keypair, now)
        if addr != peer.endpoint:
            self.roam(peer, addr)
        peer.new_handshake_from = None
        if payload:
            if peer.keepalive_from is None:
                peer.keepalive_from = now
                self._schedule(peer, now + self.timers.keepalive_timeout)
            payload = self._unpad(payload)
        else:
            stats.keepalives_received += 1
        if (
            keypair.is_initiator
            and now - keypair.created >= self._receive_rekey_age
            and not peer.sent_last_minute_handshake
        ):
            peer.sent_last_minute_handshake = True
            self._initiate(peer, now, retry=False)
        stats.transport_received += 1
        return peer, payload

    def open_many(
        self, datagrams: Sequence[bytes], addr: Hashable, now: float
    ) -> list[tuple[Peer, bytes]]:
        """`open_transport` for the datagrams of one GRO read: the accepted (peer, payload) pairs.

        Once a datagram is accepted, the following ones on the same keypair
        (the usual case: one sender, one session) skip what the first did
        for the batch (look-up, expiry, keypair rotation, roaming, rekey
        check): per datagram, the counter check, one AEAD call and the replay
        window. Anything else takes `open_transport`. Refusals are counted as there.
        """
        opened: list[tuple[Peer, bytes]] = []
        append = opened.append
        stats = self.stats
        keypair: Keypair | None = None
        batch_head = -1
        peer: Peer | None = None
        for data in datagrams:
            size = len(data)
            if (
                keypair is None
                or size < TRANSPORT_MINIMUM_SIZE
                or size > MAX_TRANSPORT_SIZE
                or int.from_bytes(data[:8], "little") != batch_head
            ):
                result = self.open_transport(data, addr, now)
                if result is not None:
                    append(result)
                    batch_head = int.from_bytes(data[:8], "little")
                    found = self._index.get(batch_head >> 32)
                    keypair = found if found.__class__ is Keypair else None
                    peer = result[0]
                continue
            assert peer is not None
            counter_bytes = data[8:16]
            counter = int.from_bytes(counter_bytes, "little")
            if counter >= REJECT_AFTER_MESSAGES:
                stats.transport_counter_rejected += 1
                continue
            try:
                payload = keypair.receiving.decrypt(_NONCE_PREFIX + counter_bytes, data[16:], None)
            except InvalidTag:
                stats.transport_authentication_failed += 1
                continue
            greatest = keypair.replay_greatest
            if counter > greatest:
                shift = counter - greatest
                keypair.replay_bitmap = (
                    ((keypair.replay_bitmap << shift) | 1) & WINDOW_MASK
                    if shift < REPLAY_WINDOW
                    else 1
                )
                keypair.replay_greatest = counter
            else:
                verdict = keypair.accept_counter(counter)
                if verdict != ACCEPTED:
                    if verdict == REPLAYED:
                        stats.transport_replayed += 1
                    else:
                        stats.transport_too_old += 1
                    continue
            if payload:
                if peer.keepalive_from is None:
                    peer.keepalive_from = now
                    self._schedule(peer, now + self.timers.keepalive_timeout)
                payload = self._unpad(payload)
            else:
                stats.keepalives_received += 1
            stats.transport_received += 1
            append((peer, payload))
        return opened

    def _unpad(self, payload: bytes) -> bytes:
        """An IP packet without WireGuard's padding, by its header's length field."""
        version = payload[0] >> 4
        if version == 4:
            length = int.from_bytes(payload[2:4], "big")
        elif version == 6:
            length = int.from_bytes(payload[4:6], "big") + 40
        else:
            return payload  # a control payload: never padded
        return payload if length == len(payload) else self._trim(payload, length)

    def _trim(self, payload: bytes, length: int) -> bytes:
        if length > len(payload):
            # The IP header claims more than arrived: WireGuard drops the packet;
            # the peer still authenticated, so it is handed up as a keepalive.
            self.stats.invalid_inner_packet += 1
            return b""
        return payload[:length]

    def _received_with(self, peer: Peer, keypair: Keypair, now: float) -> None:
        """A transport message on `next` confirms the responder's new keypair."""
        if keypair is not peer.next:
            return
        if peer.previous is not None:
            self._drop(peer.previous)
        peer.previous = peer.current
        peer.current = keypair
        peer.next = None
        self.session_started(peer, keypair, now)
