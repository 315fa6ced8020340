"""What the session layer has for its caller: datagrams to send and events.

Shared by the manager's helpers; the caller drains it through `SessionManager`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from gossipmesh.session.events import SessionEvent

MAX_EVENTS = 65536
"""Events kept for a caller that does not drain them; the oldest go first."""


class Outbox:
    """Queued (datagram, address) pairs and events, in the order they arose."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Hashable]] = []
        self.events: deque[SessionEvent] = deque(maxlen=MAX_EVENTS)

    def take_datagrams(self) -> list[tuple[bytes, Hashable]]:
        """Hand over the queued datagrams (the list itself: no copy per drain)."""
        out = self.datagrams
        self.datagrams = []
        return out
