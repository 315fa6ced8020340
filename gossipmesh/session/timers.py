"""WireGuard's protocol constants (whitepaper section 6), scaled for tests.

Every duration is divided by `timer_scale` (Settings.timer_scale): a test sets
e.g. 24 to see a rekey within seconds, without editing a constant. Counts of
messages are never scaled.
"""

from __future__ import annotations

from dataclasses import dataclass

REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER = 1.0 / 3.0
KEEPALIVE_TIMEOUT = 10.0
INITIATIONS_PER_SECOND = 50
"""A peer's initiations are consumed at most this often (wireguard-go's flood guard)."""
UNDER_LOAD_HANDSHAKES_PER_SECOND = 100
"""Above this many handshake messages per second, mac2 (a cookie) is required."""
UNDER_LOAD_HOLD_TIME = 1.0
"""Once under load, stay so for this long after the rate drops (unscaled)."""
MAX_STAGED_PACKETS = 128
"""Payloads held per peer while a handshake is under way; the oldest go first."""


@dataclass(frozen=True, slots=True)
class Timers:
    """The durations in effect, in the caller's `now` units (seconds)."""

    rekey_after_time: float
    reject_after_time: float
    rekey_attempt_time: float
    rekey_timeout: float
    rekey_timeout_jitter: float
    keepalive_timeout: float
    max_handshake_attempts: int

    @classmethod
    def scaled(cls, timer_scale: float = 1.0) -> Timers:
        if not timer_scale > 0:
            raise ValueError("timer_scale must be greater than 0")
        return cls(
            rekey_after_time=REKEY_AFTER_TIME / timer_scale,
            reject_after_time=REJECT_AFTER_TIME / timer_scale,
            rekey_attempt_time=REKEY_ATTEMPT_TIME / timer_scale,
            rekey_timeout=REKEY_TIMEOUT / timer_scale,
            rekey_timeout_jitter=REKEY_TIMEOUT_JITTER / timer_scale,
            keepalive_timeout=KEEPALIVE_TIMEOUT / timer_scale,
            max_handshake_attempts=int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT),
        )

    @property
    def receive_rekey_age(self) -> float:
        """An initiator's keypair this old gets renewed when data arrives (165 s)."""
        return self.reject_after_time - self.keepalive_timeout - self.rekey_timeout

    @property
    def zero_keys_after(self) -> float:
        return self.reject_after_time * 3
