"""Counters the discovery layer exposes to metrics and tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gossipmesh.records import RefusalReason


@dataclass
class DiscoveryStats:
    """What the DHT did: traffic, drops and refused records (by reason)."""

    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    bytes_received: int = 0
    datagrams_dropped: int = 0
    """Failed to open: wrong network secret, garbage, or not started."""
    datagrams_replayed: int = 0
    """Opened, but a nonce seen within the replay window: a resent datagram."""
    rpc_malformed: int = 0
    """Opened, but not a well-formed RPC (a member sending garbage)."""
    rpc_errors: int = 0
    """A handler raised; a bug guard that should stay at zero."""
    send_errors: int = 0
    records_stored: int = 0
    lookups: int = 0
    lookups_failed: int = 0
    cache_errors: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Records refused in storage or on the lookup path, by `RefusalReason` value."""

    def refuse(self, reason: RefusalReason) -> None:
        self.refused[reason.value] += 1

    def as_dict(self) -> dict[str, object]:
        values: dict[str, object] = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name != "refused"
        }
        values["refused"] = dict(self.refused)
        return values
