"""Link flap damping, after BGP route flap damping (RFC 2439).

A link that goes down and up repeatedly would make its owner issue a new
record each time, and every node would re-flood it and recompute routes.
Each loss adds a penalty that decays exponentially; above the suppress
threshold the link is not advertised, even while up, until the penalty
decays below the reuse threshold. The penalty is capped so that suppression
ends at the latest `max_suppress` after the last flap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DampingPolicy:
    penalty_per_flap: float = 1000.0
    suppress_threshold: float = 2500.0
    """Three losses in quick succession suppress the link; one or two do not."""
    reuse_threshold: float = 750.0
    half_life: float = 60.0
    max_suppress: float = 300.0

    @property
    def ceiling(self) -> float:
        """The penalty that decays to `reuse_threshold` in exactly `max_suppress` seconds."""
        return self.reuse_threshold * math.pow(2.0, self.max_suppress / self.half_life)


@dataclass
class _Penalty:
    value: float
    at: float
    suppressed: bool


class FlapDamper:
    """Per-neighbour penalties; sans-IO: every call takes `now`."""

    def __init__(self, policy: DampingPolicy | None = None) -> None:
        self.policy = policy or DampingPolicy()
        self._penalties: dict[bytes, _Penalty] = {}

    def _decayed(self, entry: _Penalty, now: float) -> float:
        elapsed = max(0.0, now - entry.at)
        return entry.value * math.pow(0.5, elapsed / self.policy.half_life)

    def record_flap(self, neighbour: bytes, now: float) -> None:
        """The link to `neighbour` was lost."""
        entry = self._penalties.get(neighbour)
        value = self._decayed(entry, now) if entry else 0.0
        value = min(self.policy.ceiling, value + self.policy.penalty_per_flap)
        suppressed = (entry.suppressed if entry else False) or (
            value >= self.policy.suppress_threshold
        )
        self._penalties[neighbour] = _Penalty(value, now, suppressed)

    def is_suppressed(self, neighbour: bytes, now: float) -> bool:
        """Whether the link must stay out of our record now (also lifts expired suppression)."""
        entry = self._penalties.get(neighbour)
        if entry is None:
            return False
        value = self._decayed(entry, now)
        if entry.suppressed and value <= self.policy.reuse_threshold * (1 + 1e-9):
            entry.suppressed = False
        if not entry.suppressed and value < self.policy.reuse_threshold / 8:
            del self._penalties[neighbour]
            return False
        return entry.suppressed

    def reuse_time(self, neighbour: bytes) -> float | None:
        """When a suppressed link becomes usable again (None when it is not suppressed)."""
        entry = self._penalties.get(neighbour)
        if entry is None or not entry.suppressed:
            return None
        ratio = entry.value / self.policy.reuse_threshold
        if ratio <= 1.0:
            return entry.at
        return entry.at + self.policy.half_life * math.log2(ratio) + 1e-6

    def update(self, now: float) -> None:
        """Lift suppressions whose time has come and forget decayed penalties."""
        for neighbour in list(self._penalties):
            self.is_suppressed(neighbour, now)

    def next_reuse_time(self) -> float | None:
        times = [t for t in (self.reuse_time(n) for n in self._penalties) if t is not None]
        return min(times) if times else None

    def penalty(self, neighbour: bytes, now: float) -> float:
        entry = self._penalties.get(neighbour)
        return self._decayed(entry, now) if entry else 0.0
