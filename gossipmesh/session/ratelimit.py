"""Per-source handshake rate limit, applied under load after mac2 has proven the source.

A token bucket per source address, as wireguard-go limits each source IP: 20
handshake messages per second with a burst of 5. The table is bounded: when it
is full it is emptied, which only ever lets a source through early.
"""

from __future__ import annotations

from collections.abc import Hashable

HANDSHAKES_PER_SECOND_PER_SOURCE = 20.0
BURST = 5.0
MAX_SOURCES = 65536


class SourceRateLimiter:
    def __init__(
        self, rate: float = HANDSHAKES_PER_SECOND_PER_SOURCE, burst: float = BURST
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def allow(self, source: Hashable, now: float) -> bool:
        tokens, last = self._buckets.get(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= MAX_SOURCES and source not in self._buckets:
            self._buckets.clear()
        self._buckets[source] = (tokens, now)
        return allowed
