"""The session manager: every WireGuard session of one node, sans-IO.

Shaped like aioquic's QuicConnection: the caller feeds `receive_datagram(data,
addr, now)`, `send(peer, payload, now)` and `handle_timer(now)`, then pulls
`datagrams_to_send(now)`, `next_event()` and `get_timer()`. It never reads a
clock, sleeps or opens a socket. `addr` is any hashable value (a (host, port)
tuple, or a virtual address for relayed messages); replies go to it verbatim.

The data plane skips events: `open_transport` decrypts a transport datagram to
(peer, payload) and `encrypt_for` returns one ready datagram, each one dict
look-up and one AEAD call. Every refusal is silent and counted in `stats`.

The work is done by helpers that share one peer table, schedule, outbox and
stats: `PeerTable` (peers, receiver indexes), `PeerSchedule` (deadlines),
`Initiator` (initiations), `HandshakeReceiver` with `HandshakeAdmission`
(messages 1-3), `Transport` (the data path) and `PeerTimers` (timer rules).
This class wires them and keeps the public interface in one place.
"""

from __future__ import annotations

import os
from collections.abc import Hashable

from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.session.admission import HandshakeAdmission
from gossipmesh.session.crypto import KEY_SIZE, RandomSource, public_key
from gossipmesh.session.events import ControlReceived, PacketReceived, SessionEvent
from gossipmesh.session.handshake import HandshakeReceiver
from gossipmesh.session.initiator import Initiator
from gossipmesh.session.outbox import Outbox
from gossipmesh.session.peer import Peer
from gossipmesh.session.peer_timers import PeerTimers
from gossipmesh.session.peers import PeerTable
from gossipmesh.session.schedule import PeerSchedule
from gossipmesh.session.stats import SessionStats
from gossipmesh.session.timers import UNDER_LOAD_HANDSHAKES_PER_SECOND, Timers
from gossipmesh.session.transport import Transport


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
        self.static_public = public_key(static_private)
        self.timers = Timers.scaled(timer_scale)
        self.stats = SessionStats()
        outbox = Outbox()
        schedule = PeerSchedule(self.timers, random_bytes)
        table = PeerTable(
            static_private, self.static_public, preshared_key, timer_scale, random_bytes, schedule
        )
        initiator = Initiator(
            self.static_public,
            table,
            schedule,
            outbox,
            self.stats,
            self.timers,
            random_bytes,
            wall_clock_offset,
        )
        transport = Transport(table, schedule, initiator, outbox, self.stats, self.timers, mtu)
        admission = HandshakeAdmission(
            self.static_public, random_bytes, under_load_threshold, outbox, self.stats
        )
        self._handshakes = HandshakeReceiver(
            static_private,
            self.static_public,
            table,
            schedule,
            admission,
            transport,
            outbox,
            self.stats,
            self.timers,
            random_bytes,
        )
        self._timer_rules = PeerTimers(
            table, schedule, initiator, transport, outbox, self.stats, self.timers
        )
        self._table = table
        self._peers = table.peers
        self._index = table.index
        self._schedule = schedule
        self._initiator = initiator
        self._outbox = outbox
        self._events = outbox.events
        # The data path, bound straight from Transport: no extra call per packet.
        self.encrypt_for = transport.encrypt_for
        self.encrypt_many = transport.encrypt_many
        self.open_transport = transport.open_transport
        self.open_many = transport.open_many

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
        return self._table.add(peer_public_key, now, endpoint, preshared_key, persistent_keepalive)

    def remove_peer(self, peer_public_key: bytes) -> None:
        self._table.remove(peer_public_key)

    def peer(self, peer_public_key: bytes) -> Peer | None:
        return self._peers.get(peer_public_key)

    @property
    def peers(self) -> dict[bytes, Peer]:
        return dict(self._peers)

    # --- the caller pulls -----------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Hashable]]:
        return self._outbox.take_datagrams()

    @property
    def has_output(self) -> bool:
        """Datagrams or events are waiting (the data plane checks this after a batch)."""
        return bool(self._outbox.datagrams or self._events)

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._schedule.earliest()

    def handle_timer(self, now: float) -> None:
        self._timer_rules.handle_timer(now)

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
            return self._handshakes.on_initiation(data, addr, now)
        if kind == 2:
            return self._handshakes.on_response(data, addr, now)
        if kind == 3:
            return self._handshakes.on_cookie_reply(data, now)
        self.stats.unknown_type += 1
        return None

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
            self._outbox.datagrams.append((datagram, peer.endpoint))
        return True

    def initiate_handshake(self, peer_public_key: bytes, now: float) -> None:
        """Start a handshake now (rate-limited to one per REKEY_TIMEOUT per peer)."""
        peer = self._peers.get(peer_public_key)
        if peer is not None:
            self._initiator.initiate(peer, now, retry=False)
