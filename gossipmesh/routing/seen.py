"""Bounded memory of recently seen message ids, for duplicate suppression.

Flooded broadcasts and relay envelopes are de-duplicated by an id their
origin chose, never by their bytes. Memory is bounded twice: ids older than
`ttl` are forgotten, and at most `capacity` ids are kept (the oldest go
first). Forgetting is safe because broadcasts also carry a hop budget and
relay envelopes a hop limit, so a forgotten duplicate still dies out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class SeenSet:
    def __init__(self, ttl: float, capacity: int = 8192) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def add(self, key: Hashable, now: float) -> bool:
        """Remember `key`; True when it was not already remembered."""
        self._expire(now)
        if key in self._seen:
            return False
        self._seen[key] = now
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        horizon = now - self.ttl
        seen = self._seen
        while seen:
            key = next(iter(seen))
            if seen[key] > horizon:
                break
            del seen[key]

    def __len__(self) -> int:
        return len(self._seen)
