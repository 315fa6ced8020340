"""Which handshake messages get the expensive work (WireGuard's DoS defence).

Every handshake message needs a valid mac1. Above a rate of handshake
messages the node is under load: then a message also needs mac2 (proof the
sender can receive at its address; without it, a cookie reply answers), and
each source address gets a budget.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from gossipmesh.session.cookies import CookieChecker
from gossipmesh.session.crypto import RandomSource
from gossipmesh.session.outbox import Outbox
from gossipmesh.session.ratelimit import SourceRateLimiter
from gossipmesh.session.stats import SessionStats
from gossipmesh.session.timers import UNDER_LOAD_HOLD_TIME


class HandshakeAdmission:
    """Checks MACs, counts the handshake rate, and answers with cookies under load."""

    def __init__(
        self,
        static_public: bytes,
        random_bytes: RandomSource,
        under_load_threshold: int,
        outbox: Outbox,
        stats: SessionStats,
    ) -> None:
        self._cookies = CookieChecker(static_public, random_bytes)
        self._source_limiter = SourceRateLimiter()
        self._under_load_threshold = under_load_threshold
        self._outbox = outbox
        self._stats = stats
        self._load_window_start = -math.inf
        self._load_count = 0
        self._under_load_until = -math.inf

    def _note_handshake_message(self, now: float) -> bool:
        """Count a handshake message; True while the node is under load."""
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_count = 0
        self._load_count += 1
        if self._load_count > self._under_load_threshold:
            self._under_load_until = now + UNDER_LOAD_HOLD_TIME
        return now < self._under_load_until

    def admit(self, data: bytes, addr: Hashable, now: float) -> bool:
        """mac1 always; under load, mac2 too (else a cookie reply) and a per-source rate."""
        stats = self._stats
        under_load = self._note_handshake_message(now)
        if not self._cookies.mac1_valid(data):
            stats.bad_mac1 += 1
            return False
        if under_load and not self._cookies.mac2_valid(data, addr, now):
            stats.bad_mac2 += 1
            sender = int.from_bytes(data[4:8], "little")
            reply = self._cookies.cookie_reply(data, sender, addr, now)
            self._outbox.datagrams.append((reply, addr))
            stats.cookie_replies_sent += 1
            return False
        if under_load and not self._source_limiter.allow(addr, now):
            stats.handshake_rate_limited += 1
            return False
        return True
