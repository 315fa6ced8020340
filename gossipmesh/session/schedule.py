"""When each peer's timers next need looking at: one heap entry per peer deadline.

A peer's earliest queued time is `Peer.scheduled_at`; an entry that no longer
matches it is stale and skipped, so rescheduling never searches the heap.
"""

from __future__ import annotations

import heapq
import itertools
import math

from gossipmesh.session.crypto import RandomSource
from gossipmesh.session.peer import Peer
from gossipmesh.session.timers import Timers


class PeerSchedule:
    """A min-heap of (deadline, sequence, peer); the sequence keeps peers uncompared."""

    def __init__(self, timers: Timers, random_bytes: RandomSource) -> None:
        self._timers = timers
        self._random_bytes = random_bytes
        self._heap: list[tuple[float, int, Peer]] = []
        self._sequence = itertools.count()

    def schedule(self, peer: Peer, when: float) -> None:
        """Queue `peer` for `when` unless it is already queued earlier."""
        if when < peer.scheduled_at:
            peer.scheduled_at = when
            heapq.heappush(self._heap, (when, next(self._sequence), peer))

    def reschedule(self, peer: Peer) -> None:
        """Queue `peer` for the earliest of its own deadlines."""
        self.schedule(peer, peer.next_deadline(self._timers))

    def cancel(self, peer: Peer) -> None:
        peer.scheduled_at = math.nan  # never equal: its heap entries are stale

    def earliest(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].scheduled_at != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Peer | None:
        """The next peer whose deadline has passed, now unqueued; None when none is due."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, peer = heapq.heappop(heap)
            if peer.scheduled_at == when:
                peer.scheduled_at = math.inf
                return peer
        return None

    def jitter(self) -> float:
        """Random slack for handshake retries, so peers that failed together spread out."""
        fraction = int.from_bytes(self._random_bytes(2), "little") / 65536.0
        return fraction * self._timers.rekey_timeout_jitter
