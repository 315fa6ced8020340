"""The peer table: peers by static key, sessions by the receiver index datagrams carry.

Both maps live here so that a keypair or pending handshake leaves the index
whenever its peer lets go of it.
"""

from __future__ import annotations

from collections.abc import Hashable

from gossipmesh.session import noise
from gossipmesh.session.crypto import KEY_SIZE, AuthenticationError, RandomSource, dh
from gossipmesh.session.peer import Keypair, Peer, PendingHandshake
from gossipmesh.session.schedule import PeerSchedule

_MAX_INDEX_TRIES = 64


class PeerTable:
    """Every known peer and every live receiver index of one node."""

    def __init__(
        self,
        static_private: bytes,
        static_public: bytes,
        preshared_key: bytes,
        timer_scale: float,
        random_bytes: RandomSource,
        schedule: PeerSchedule,
    ) -> None:
        self._static_private = static_private
        self._static_public = static_public
        self._preshared_key = preshared_key
        self._timer_scale = timer_scale
        self._random_bytes = random_bytes
        self._schedule = schedule
        self.peers: dict[bytes, Peer] = {}
        self.index: dict[int, Keypair | PendingHandshake] = {}

    def add(
        self,
        peer_public_key: bytes,
        now: float,
        endpoint: Hashable | None,
        preshared_key: bytes | None,
        persistent_keepalive: float | None,
    ) -> Peer:
        """Add a peer (or return the existing one, with a new endpoint if given)."""
        existing = self.peers.get(peer_public_key)
        if existing is not None:
            if endpoint is not None:
                existing.endpoint = endpoint
            return existing
        if len(peer_public_key) != KEY_SIZE:
            raise ValueError("a peer's public key is 32 bytes")
        if peer_public_key == self._static_public:
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
        self.peers[peer_public_key] = peer
        if peer.persistent_keepalive:
            self._schedule.reschedule(peer)
        return peer

    def remove(self, peer_public_key: bytes) -> None:
        peer = self.peers.pop(peer_public_key, None)
        if peer is None:
            return
        self.clear_keys(peer)
        peer.staged.clear()
        self._schedule.cancel(peer)

    def new_index(self) -> int:
        """A random receiver index not in use (random, so indexes reveal nothing)."""
        for _ in range(_MAX_INDEX_TRIES):
            index = int.from_bytes(self._random_bytes(4), "little")
            if index not in self.index:
                return index
        raise RuntimeError("random source keeps repeating receiver indexes")

    def drop(self, keypair: Keypair) -> None:
        """Unindex a keypair, unless its index already names something newer."""
        if self.index.get(keypair.local_index) is keypair:
            del self.index[keypair.local_index]

    def forget_pending(self, peer: Peer) -> None:
        """Give up our initiation in flight: its response will find no index."""
        if peer.pending is not None:
            self.index.pop(peer.pending.local_index, None)
            peer.pending = None

    def clear_keys(self, peer: Peer) -> None:
        for keypair in peer.keypairs():
            self.drop(keypair)
        peer.current = peer.previous = peer.next = None
        self.forget_pending(peer)
