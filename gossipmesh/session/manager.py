"""The session manager: every WireGuard session of one node, sans-IO.

Shaped like aioquic's QuicConnection: the caller feeds `receive_datagram(data,
addr, now)`, `send(peer, payload, now)` and `handle_timer(now)`, then pulls
`datagrams_to_send(now)`, `next_event()` and `get_timer()`. It never reads a
clock, sleeps or opens a socket. `addr` is any hashable value (a (host, port)
tuple, or a virtual address for relayed messages); replies go to it verbatim.

The data plane skips events: `open_transport` decrypts a transport datagram to
(peer, payload) and `encrypt_for` returns one ready datagram, each one dict
look-up and one AEAD call. Every refusal is silent and counted in `stats`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
from collections import deque
from collections.abc import Hashable, Sequence

from cryptography.exceptions import InvalidTag

from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.session import noise
from gossipmesh.session.cookies import CookieChecker
from gossipmesh.session.crypto import (
    KEY_SIZE,
    AuthenticationError,
    RandomSource,
    dh,
    generate_keypair,
    public_key,
    tai64n,
)
from gossipmesh.session.events import (
    ControlReceived,
    EndpointChanged,
    HandshakeAbandoned,
    HandshakeCompleted,
    PacketReceived,
    SessionEvent,
)
from gossipmesh.session.keypair import (
    ACCEPTED,
    REPLAY_WINDOW,
    REPLAYED,
    WINDOW_MASK,
    Keypair,
)
from gossipmesh.session.messages import (
    MAX_TRANSPORT_SIZE,
    TRANSPORT_MINIMUM_SIZE,
    MalformedMessage,
    build_initiation_body,
    build_response_body,
    parse_cookie_reply,
    parse_initiation,
    parse_response,
)
from gossipmesh.session.peer import Peer, PendingHandshake
from gossipmesh.session.ratelimit import SourceRateLimiter
from gossipmesh.session.stats import SessionStats
from gossipmesh.session.timers import (
    INITIATIONS_PER_SECOND,
    REJECT_AFTER_MESSAGES,
    REKEY_AFTER_MESSAGES,
    UNDER_LOAD_HANDSHAKES_PER_SECOND,
    UNDER_LOAD_HOLD_TIME,
    Timers,
)

_NONCE_PREFIX = b"\x00\x00\x00\x00"
_PADDING = tuple(bytes(n) for n in range(16))
_MAX_EVENTS = 65536
_MAX_INDEX_TRIES = 64


class SessionManager:
    """All sessions of one node: a peer table keyed by static public key."""

    def __init__(
        self,
        static_private: bytes,
        *,
        preshared_key: bytes = bytes(KEY_SIZE),
        timer_scale: float = 1.0,
        random_bytes: RandomSource = os.urandom,
        wall_clock_offset: float = 0.0,
        under_load_threshold: int = UNDER_LOAD_HANDSHAKES_PER_SECOND,
        mtu: int | None = None,
    ) -> None:
        """`wall_clock_offset` turns `now` into Unix time for TAI64N timestamps.

        Handshake timestamps must grow across restarts, so they follow the wall
        clock; the adapter passes `time.time() - loop.time()` once.
        """
        if len(static_private) != KEY_SIZE or len(preshared_key) != KEY_SIZE:
            raise ValueError("keys are 32 bytes")
        self._static_private = static_private
        self.static_public = public_key(static_private)
        self._preshared_key = preshared_key
        self._random_bytes = random_bytes
        self._wall_clock_offset = wall_clock_offset
        self._under_load_threshold = under_load_threshold
        self._mtu = mtu
        self.timers = Timers.scaled(timer_scale)
        self._timer_scale = timer_scale
        self._reject_after_time = self.timers.reject_after_time
        self._rekey_after_time = self.timers.rekey_after_time
        self._receive_rekey_age = self.timers.receive_rekey_age
        self._cookies = CookieChecker(self.static_public, random_bytes)
        self._source_limiter = SourceRateLimiter()
        self._own_transcript = noise.initial_transcript(self.static_public)
        self._peers: dict[bytes, Peer] = {}
        self._index: dict[int, Keypair | PendingHandshake] = {}
        self._outgoing: list[tuple[bytes, Hashable]] = []
        self._events: deque[SessionEvent] = deque(maxlen=_MAX_EVENTS)
        self._heap: list[tuple[float, int, Peer]] = []
        self._sequence = itertools.count()
        self._load_window_start = -math.inf
        self._load_count = 0
        self._under_load_until = -math.inf
        self.stats = SessionStats()

    @classmethod
    def for_identity(
        cls,
        identity: Identity,
        secret: NetworkSecret,
        *,
        timer_scale: float = 1.0,
        random_bytes: RandomSource = os.urandom,
        wall_clock_offset: float = 0.0,
        mtu: int | None = None,
    ) -> SessionManager:
        """The node's manager: static key from its key file, PSK from the network secret."""
        return cls(
            identity.x25519_private_key,
            preshared_key=secret.session_psk,
            timer_scale=timer_scale,
            random_bytes=random_bytes,
            wall_clock_offset=wall_clock_offset,
            mtu=mtu,
        )

    # --- peer table -----------------------------------------------------

    def add_peer(
        self,
        peer_public_key: bytes,
        now: float,
        *,
        endpoint: Hashable | None = None,
        preshared_key: bytes | None = None,
        persistent_keepalive: float | None = None,
    ) -> Peer:
        """Add a peer (or return the existing one, with a new endpoint if given)."""
        existing = self._peers.get(peer_public_key)
        if existing is not None:
            if endpoint is not None:
                existing.endpoint = endpoint
            return existing
        if len(peer_public_key) != KEY_SIZE:
            raise ValueError("a peer's public key is 32 bytes")
        if peer_public_key == self.static_public:
            raise ValueError("a node cannot be its own peer")
        psk = self._preshared_key if preshared_key is None else preshared_key
        if len(psk) != KEY_SIZE:
            raise ValueError("a preshared key is 32 bytes")
        try:
            static_static = dh(self._static_private, peer_public_key)
        except AuthenticationError:
            raise ValueError("peer public key is a low-order point") from None
        peer = Peer(
            peer_public_key,
            psk,
            static_static,
            noise.initial_transcript(peer_public_key),
            endpoint,
            persistent_keepalive / self._timer_scale if persistent_keepalive else None,
            now,
        )
        self._peers[peer_public_key] = peer
        if peer.persistent_keepalive:
            self._schedule(peer, peer.next_deadline(self.timers))
        return peer

    def remove_peer(self, peer_public_key: bytes) -> None:
        peer = self._peers.pop(peer_public_key, None)
        if peer is None:
            return
        self._clear_keys(peer)
        peer.staged.clear()
        peer.scheduled_at = math.nan  # never equal: its heap entries are stale

    def peer(self, peer_public_key: bytes) -> Peer | None:
        return self._peers.get(peer_public_key)

    @property
    def peers(self) -> dict[bytes, Peer]:
        return dict(self._peers)

    # --- the caller pulls -----------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Hashable]]:
        out = self._outgoing
        self._outgoing = []
        return out

    @property
    def has_output(self) -> bool:
        """Datagrams or events are waiting (the data plane checks this after a batch)."""
        return bool(self._outgoing or self._events)

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].scheduled_at != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, peer = heapq.heappop(heap)
            if peer.scheduled_at != when:
                continue
            peer.scheduled_at = math.inf
            self._run_peer_timers(peer, now)

    # --- receiving ------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Hashable, now: float) -> bytes | None:
        """Process one datagram; return the public key of the peer it authenticated as.

        Never raises for any input: refusals return None and count in `stats`.
        """
        if not data:
            self.stats.unknown_type += 1
            return None
        kind = data[0]
        if kind == 4:
            opened = self.open_transport(data, addr, now)
            if opened is None:
                return None
            peer, payload = opened
            if payload:
                if (payload[0] >> 4) in (4, 6):
                    self._events.append(PacketReceived(peer.public_key, payload))
                else:
                    self._events.append(ControlReceived(peer.public_key, payload))
            return peer.public_key
        if kind == 1:
            return self._on_initiation(data, addr, now)
        if kind == 2:
            return self._on_response(data, addr, now)
        if kind == 3:
            return self._on_cookie_reply(data, now)
        self.stats.unknown_type += 1
        return None

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
            self._roam(peer, addr)
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
        self._handshake_complete(peer, keypair, now)

    def _roam(self, peer: Peer, addr: Hashable) -> None:
        peer.endpoint = addr
        self.stats.endpoint_changes += 1
        self._events.append(EndpointChanged(peer.public_key, addr))

    def _note_handshake_message(self, now: float) -> bool:
        """Count a handshake message; True while the node is under load."""
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_count = 0
        self._load_count += 1
        if self._load_count > self._under_load_threshold:
            self._under_load_until = now + UNDER_LOAD_HOLD_TIME
        return now < self._under_load_until

    def _admit(self, data: bytes, addr: Hashable, now: float) -> bool:
        """mac1 always; under load, mac2 too (else a cookie reply) and a per-source rate."""
        under_load = self._note_handshake_message(now)
        if not self._cookies.mac1_valid(data):
            self.stats.bad_mac1 += 1
            return False
        if under_load and not self._cookies.mac2_valid(data, addr, now):
            self.stats.bad_mac2 += 1
            sender = int.from_bytes(data[4:8], "little")
            self._outgoing.append((self._cookies.cookie_reply(data, sender, addr, now), addr))
            self.stats.cookie_replies_sent += 1
            return False
        if under_load and not self._source_limiter.allow(addr, now):
            self.stats.handshake_rate_limited += 1
            return False
        return True

    def _on_initiation(self, data: bytes, addr: Hashable, now: float) -> bytes | None:
        stats = self.stats
        try:
            message = parse_initiation(data)
        except MalformedMessage:
            stats.malformed += 1
            return None
        if not self._admit(data, addr, now):
            return None
        parts = noise.InitiationParts(
            message.ephemeral, message.encrypted_static, message.encrypted_timestamp
        )
        try:
            middle, initiator_static = noise.read_initiation_static(
                self._own_transcript, self._static_private, parts
            )
        except AuthenticationError:
            stats.initiation_decrypt_failed += 1
            return None
        peer = self._peers.get(initiator_static)
        if peer is None:
            stats.unknown_peer += 1
            return None
        try:
            transcript, timestamp = noise.read_initiation_payload(middle, peer.static_static, parts)
        except AuthenticationError:
            stats.initiation_decrypt_failed += 1
            return None
        if len(timestamp) != 12 or timestamp <= peer.last_initiation_timestamp:
            stats.replayed_initiation += 1
            return None
        if (
            peer.last_initiation_consumed is not None
            and now - peer.last_initiation_consumed < 1.0 / INITIATIONS_PER_SECOND
        ):
            stats.initiation_flood += 1
            return None
        peer.last_initiation_timestamp = timestamp
        peer.last_initiation_consumed = now
        stats.initiations_received += 1

        ephemeral_private, ephemeral_public = generate_keypair(self._random_bytes)
        try:
            final, encrypted_nothing = noise.write_response(
                transcript,
                ephemeral_private,
                ephemeral_public,
                message.ephemeral,
                initiator_static,
                peer.preshared_key,
                b"",
            )
        except AuthenticationError:
            stats.initiation_decrypt_failed += 1
            return None
        local_index = self._new_index()
        receive_key, send_key = noise.split(final)
        keypair = Keypair(peer, send_key, receive_key, local_index, message.sender, False, now)
        if peer.next is not None:
            self._drop(peer.next)
        if peer.previous is not None:
            self._drop(peer.previous)
            peer.previous = None
        peer.next = keypair
        self._index[local_index] = keypair
        body = build_response_body(local_index, message.sender, ephemeral_public, encrypted_nothing)
        if addr != peer.endpoint:
            self._roam(peer, addr)
        self._outgoing.append((peer.cookie_jar.seal(body, now), addr))
        stats.responses_sent += 1
        peer.new_handshake_from = None
        peer.keepalive_from = None
        peer.last_sent = now
        peer.zero_keys_at = now + self.timers.zero_keys_after
        self._schedule(peer, peer.next_deadline(self.timers))
        return peer.public_key

    def _on_response(self, data: bytes, addr: Hashable, now: float) -> bytes | None:
        stats = self.stats
        try:
            message = parse_response(data)
        except MalformedMessage:
            stats.malformed += 1
            return None
        if not self._admit(data, addr, now):
            return None
        pending = self._index.get(message.receiver)
        if pending is None or pending.__class__ is not PendingHandshake:
            stats.unknown_receiver_index += 1
            return None
        assert isinstance(pending, PendingHandshake)
        peer = pending.peer
        try:
            final, _ = noise.read_response(
                pending.transcript,
                pending.ephemeral_private,
                self._static_private,
                message.ephemeral,
                message.encrypted_nothing,
                peer.preshared_key,
            )
        except AuthenticationError:
            stats.response_decrypt_failed += 1
            return None
        stats.responses_received += 1
        send_key, receive_key = noise.split(final)
        keypair = Keypair(
            peer, send_key, receive_key, pending.local_index, message.sender, True, now
        )
        self._index[pending.local_index] = keypair
        peer.pending = None
        if peer.next is not None:
            if peer.previous is not None:
                self._drop(peer.previous)
            peer.previous = peer.next
            peer.next = None
            if peer.current is not None:
                self._drop(peer.current)
        else:
            if peer.previous is not None:
                self._drop(peer.previous)
            peer.previous = peer.current
        peer.current = keypair
        if addr != peer.endpoint:
            self._roam(peer, addr)
        peer.new_handshake_from = None
        peer.zero_keys_at = now + self.timers.zero_keys_after
        self._handshake_complete(peer, keypair, now)
        return peer.public_key

    def _on_cookie_reply(self, data: bytes, now: float) -> bytes | None:
        try:
            reply = parse_cookie_reply(data)
        except MalformedMessage:
            self.stats.malformed += 1
            return None
        entry = self._index.get(reply.receiver)
        if entry is None:
            self.stats.unknown_receiver_index += 1
            return None
        peer = entry.peer
        if not peer.cookie_jar.consume_reply(reply.nonce, reply.encrypted_cookie, now):
            self.stats.cookie_reply_invalid += 1
            return None
        self.stats.cookie_replies_received += 1
        return None

    def _handshake_complete(self, peer: Peer, keypair: Keypair, now: float) -> None:
        peer.retransmit_at = None
        peer.handshake_attempts = 0
        peer.sent_last_minute_handshake = False
        peer.last_handshake_completed = now
        self.stats.handshakes_completed += 1
        self._events.append(
            HandshakeCompleted(peer.public_key, keypair.is_initiator, keypair.local_index)
        )
        if peer.staged:
            self._send_staged(peer, now)
        elif keypair.is_initiator:
            self._send_keepalive(peer, now)
        self._schedule(peer, peer.next_deadline(self.timers))

    # --- sending --------------------------------------------------------

    def send(self, peer_public_key: bytes, payload: bytes, now: float) -> bool:
        """Encrypt `payload` (an IP packet or a control message) for a peer.

        Without a usable session the payload is staged and a handshake starts;
        False only when the peer is unknown.
        """
        peer = self._peers.get(peer_public_key)
        if peer is None:
            self.stats.send_unknown_peer += 1
            return False
        datagram = self.encrypt_for(peer, payload, now)
        if datagram is not None:
            self._outgoing.append((datagram, peer.endpoint))
        return True

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

    def initiate_handshake(self, peer_public_key: bytes, now: float) -> None:
        """Start a handshake now (rate-limited to one per REKEY_TIMEOUT per peer)."""
        peer = self._peers.get(peer_public_key)
        if peer is not None:
            self._initiate(peer, now, retry=False)

    def _stage(self, peer: Peer, payload: bytes, now: float) -> None:
        if len(peer.staged) == peer.staged.maxlen:
            self.stats.staged_dropped += 1
        peer.staged.append(payload)
        if peer.endpoint is None:
            self.stats.send_without_endpoint += 1
            return
        self._initiate(peer, now, retry=False)

    def _send_staged(self, peer: Peer, now: float) -> None:
        staged = list(peer.staged)
        peer.staged.clear()
        for payload in staged:
            datagram = self.encrypt_for(peer, payload, now)
            if datagram is None:
                return  # staged again, with a handshake under way
            if not payload:
                self.stats.keepalives_sent += 1
            self._outgoing.append((datagram, peer.endpoint))

    def _send_keepalive(self, peer: Peer, now: float) -> None:
        if peer.staged:
            self._send_staged(peer, now)
            return
        datagram = self.encrypt_for(peer, b"", now)
        if datagram is not None:
            self.stats.keepalives_sent += 1
            self._outgoing.append((datagram, peer.endpoint))

    def _initiate(self, peer: Peer, now: float, *, retry: bool) -> None:
        if not retry:
            peer.handshake_attempts = 0
            if (
                peer.last_handshake_sent is not None
                and now - peer.last_handshake_sent < self.timers.rekey_timeout
            ):
                return
        endpoint = peer.endpoint
        if endpoint is None:
            self.stats.send_without_endpoint += 1
            return
        peer.last_handshake_sent = now
        if peer.pending is not None:
            self._index.pop(peer.pending.local_index, None)
            peer.pending = None
        ephemeral_private, ephemeral_public = generate_keypair(self._random_bytes)
        timestamp = tai64n(now + self._wall_clock_offset)
        if timestamp <= peer.last_timestamp_sent:
            timestamp = (int.from_bytes(peer.last_timestamp_sent, "big") + 1).to_bytes(12, "big")
        peer.last_timestamp_sent = timestamp
        try:
            transcript, parts = noise.write_initiation(
                peer.initial_transcript,
                self.static_public,
                ephemeral_private,
                ephemeral_public,
                peer.public_key,
                peer.static_static,
                timestamp,
            )
        except AuthenticationError:  # pragma: no cover - peer keys are checked in add_peer
            return
        local_index = self._new_index()
        pending = PendingHandshake(peer, local_index, transcript, ephemeral_private)
        self._index[local_index] = pending
        peer.pending = pending
        body = build_initiation_body(
            local_index, parts.ephemeral, parts.encrypted_static, parts.encrypted_payload
        )
        self._outgoing.append((peer.cookie_jar.seal(body, now), endpoint))
        self.stats.initiations_sent += 1
        peer.retransmit_at = now + self.timers.rekey_timeout + self._jitter()
        self._schedule(peer, peer.retransmit_at)

    # --- timers ---------------------------------------------------------

    def _jitter(self) -> float:
        fraction = int.from_bytes(self._random_bytes(2), "little") / 65536.0
        return fraction * self.timers.rekey_timeout_jitter

    def _schedule(self, peer: Peer, when: float) -> None:
        if when < peer.scheduled_at:
            peer.scheduled_at = when
            heapq.heappush(self._heap, (when, next(self._sequence), peer))

    def _run_peer_timers(self, peer: Peer, now: float) -> None:
        timers = self.timers
        if peer.retransmit_at is not None and now >= peer.retransmit_at:
            peer.retransmit_at = None
            if peer.handshake_attempts > timers.max_handshake_attempts:
                self._abandon_handshake(peer, now)
            else:
                peer.handshake_attempts += 1
                self._initiate(peer, now, retry=True)
        if (
            peer.keepalive_from is not None
            and now >= peer.keepalive_from + timers.keepalive_timeout
        ):
            peer.keepalive_from = None
            self._send_keepalive(peer, now)
        if peer.new_handshake_from is not None and now >= (
            peer.new_handshake_from
            + timers.keepalive_timeout
            + timers.rekey_timeout
            + peer.new_handshake_jitter
        ):
            peer.new_handshake_from = None
            peer.new_handshake_jitter = self._jitter()
            self._initiate(peer, now, retry=False)
        if peer.persistent_keepalive:
            since = peer.last_sent if peer.last_sent is not None else peer.added_at
            if now >= since + peer.persistent_keepalive:
                self._send_keepalive(peer, now)
                if peer.last_sent is None or peer.last_sent < now:
                    peer.last_sent = now  # no session yet: try again one interval later
        if peer.zero_keys_at is not None and now >= peer.zero_keys_at:
            peer.zero_keys_at = None
            self._clear_keys(peer)
        self._schedule(peer, peer.next_deadline(timers))

    def _abandon_handshake(self, peer: Peer, now: float) -> None:
        if peer.pending is not None:
            self._index.pop(peer.pending.local_index, None)
            peer.pending = None
        peer.staged.clear()
        self.stats.handshake_attempts_abandoned += 1
        self._events.append(HandshakeAbandoned(peer.public_key))
        if peer.zero_keys_at is None:
            peer.zero_keys_at = now + self.timers.zero_keys_after

    def _clear_keys(self, peer: Peer) -> None:
        for keypair in peer.keypairs():
            self._drop(keypair)
        peer.current = peer.previous = peer.next = None
        if peer.pending is not None:
            self._index.pop(peer.pending.local_index, None)
            peer.pending = None

    def _drop(self, keypair: Keypair) -> None:
        if self._index.get(keypair.local_index) is keypair:
            del self._index[keypair.local_index]

    def _new_index(self) -> int:
        for _ in range(_MAX_INDEX_TRIES):
            index = int.from_bytes(self._random_bytes(4), "little")
            if index not in self._index:
                return index
        raise RuntimeError("random source keeps repeating receiver indexes")
