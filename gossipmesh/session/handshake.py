"""Handshake messages received: initiations answered, responses and cookies consumed.

Starting a handshake is `Initiator`'s job; a finished one is handed to
`Transport.session_started`, which sends what waited for it.
"""

from __future__ import annotations

from collections.abc import Hashable

from gossipmesh.session import noise
from gossipmesh.session.admission import HandshakeAdmission
from gossipmesh.session.crypto import AuthenticationError, RandomSource, generate_keypair
from gossipmesh.session.messages import (
    MalformedMessage,
    build_response_body,
    parse_cookie_reply,
    parse_initiation,
    parse_response,
)
from gossipmesh.session.outbox import Outbox
from gossipmesh.session.peer import Keypair, PendingHandshake
from gossipmesh.session.peers import PeerTable
from gossipmesh.session.schedule import PeerSchedule
from gossipmesh.session.stats import SessionStats
from gossipmesh.session.timers import INITIATIONS_PER_SECOND, Timers
from gossipmesh.session.transport import Transport


class HandshakeReceiver:
    """Processes message types 1-3; each returns the authenticated peer's key, or None."""

    def __init__(
        self,
        static_private: bytes,
        static_public: bytes,
        table: PeerTable,
        schedule: PeerSchedule,
        admission: HandshakeAdmission,
        transport: Transport,
        outbox: Outbox,
        stats: SessionStats,
        timers: Timers,
        random_bytes: RandomSource,
    ) -> None:
        self._static_private = static_private
        self._own_transcript = noise.initial_transcript(static_public)
        self._table = table
        self._peers = table.peers
        self._index = table.index
        self._schedule = schedule
        self._admission = admission
        self._transport = transport
        self._outbox = outbox
        self._stats = stats
        self._timers = timers
        self._random_bytes = random_bytes

    def on_initiation(self, data: bytes, addr: Hashable, now: float) -> bytes | None:
        """Answer a peer's initiation; its keypair waits in `next` until used."""
        stats = self._stats
        try:
            message = parse_initiation(data)
        except MalformedMessage:
            stats.malformed += 1
            return None
        if not self._admission.admit(data, addr, now):
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
        local_index = self._table.new_index()
        receive_key, send_key = noise.split(final)
        keypair = Keypair(peer, send_key, receive_key, local_index, message.sender, False, now)
        if peer.next is not None:
            self._table.drop(peer.next)
        if peer.previous is not None:
            self._table.drop(peer.previous)
            peer.previous = None
        peer.next = keypair
        self._index[local_index] = keypair
        body = build_response_body(local_index, message.sender, ephemeral_public, encrypted_nothing)
        if addr != peer.endpoint:
            self._transport.roam(peer, addr)
        self._outbox.datagrams.append((peer.cookie_jar.seal(body, now), addr))
        stats.responses_sent += 1
        peer.new_handshake_from = None
        peer.keepalive_from = None
        peer.last_sent = now
        peer.zero_keys_at = now + self._timers.zero_keys_after
        self._schedule.reschedule(peer)
        return peer.public_key

    def on_response(self, data: bytes, addr: Hashable, now: float) -> bytes | None:
        """Finish our handshake: the new keypair becomes `current` at once."""
        stats = self._stats
        try:
            message = parse_response(data)
        except MalformedMessage:
            stats.malformed += 1
            return None
        if not self._admission.admit(data, addr, now):
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
        drop = self._table.drop
        if peer.next is not None:
            if peer.previous is not None:
                drop(peer.previous)
            peer.previous = peer.next
            peer.next = None
            if peer.current is not None:
                drop(peer.current)
        else:
            if peer.previous is not None:
                drop(peer.previous)
            peer.previous = peer.current
        peer.current = keypair
        if addr != peer.endpoint:
            self._transport.roam(peer, addr)
        peer.new_handshake_from = None
        peer.zero_keys_at = now + self._timers.zero_keys_after
        self._transport.session_started(peer, keypair, now)
        return peer.public_key

    def on_cookie_reply(self, data: bytes, now: float) -> bytes | None:
        """Keep the cookie for our next message's mac2; never authenticates a peer."""
        stats = self._stats
        try:
            reply = parse_cookie_reply(data)
        except MalformedMessage:
            stats.malformed += 1
            return None
        entry = self._index.get(reply.receiver)
        if entry is None:
            stats.unknown_receiver_index += 1
            return None
        peer = entry.peer
        if not peer.cookie_jar.consume_reply(reply.nonce, reply.encrypted_cookie, now):
            stats.cookie_reply_invalid += 1
            return None
        stats.cookie_replies_received += 1
        return None
