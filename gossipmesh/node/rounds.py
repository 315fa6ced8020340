"""The node's two periodic rounds: probing for direct paths, and fetching missing records.

Each round is timed from the end of the previous one — when its probes or
look-ups have all been answered or timed out — plus the interval with
±10 % jitter, so that a slow round never overlaps the next one and the
rounds of many nodes started together drift apart instead of pulsing.
"""

from __future__ import annotations

import random


def round_jitter(rng: random.Random) -> float:
    """A factor in [0.9, 1.1]: periodic rounds of many nodes must not synchronise."""
    return 0.9 + 0.2 * rng.random()


class RoundTimer:
    """One periodic round: due, running (waiting for its results), or stopped."""

    def __init__(self, interval: float, rng: random.Random) -> None:
        self._interval = interval
        self._rng = rng
        self.due: float | None = None
        """When the round is next due; None while it runs or while stopped."""
        self.running = False

    def start(self, now: float) -> None:
        self.due = now
        self.running = False

    def stop(self) -> None:
        self.due = None
        self.running = False

    def take(self, now: float) -> bool:
        """True (and now running) if the round is due at `now`."""
        if self.due is None or now < self.due:
            return False
        self.due = None
        self.running = True
        return True

    def finished(self, now: float) -> None:
        """The round's results are in: time the next one."""
        if self.running:
            self.running = False
            self.due = now + self._interval * round_jitter(self._rng)
