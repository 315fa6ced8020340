"""The set of link-state records a node holds, keyed by origin node id.

De-duplication is by (origin, sequence): an offered record at or below the
held sequence is refused before its signature is checked, so a flood of
copies costs a dict look-up each, not a signature verification each.
Records expire at their own `expires_at`; a record issued further in our
future than the allowed clock skew is refused.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from dataclasses import dataclass
from enum import Enum

from gossipmesh.routing.linkstate import LinkStateRecord
from gossipmesh.routing.messages import BUCKET_HASH_SIZE, BUCKETS, Summary, bucket_of
from gossipmesh.routing.table import AgreedGraph


class Offer(Enum):
    NEW = "new"
    STALE = "stale"
    """At or below the sequence held: a duplicate or an old copy."""
    EXPIRED = "expired"
    FUTURE = "future"
    """Issued further in our future than the allowed clock skew."""
    INVALID = "invalid"
    """Bad signature."""


@dataclass(frozen=True)
class Held:
    record: LinkStateRecord
    encoded: bytes


class RecordStore:
    def __init__(self, own_origin: bytes | None = None) -> None:
        """`own_origin`'s record never expires here: its owner re-issues it."""
        self.own_origin = own_origin
        self._held: dict[bytes, Held] = {}
        self._order: list[bytes] = []
        self._bucket_hashes: list[bytes | None] = [None] * BUCKETS
        self._expiries: list[tuple[int, bytes, int]] = []
        """Heap of (expires_at_ms, origin, sequence); entries of replaced records are skipped."""
        self.graph = AgreedGraph()
        """The links both ends of them list, over the records held: kept in step here."""

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, origin: bytes) -> bool:
        return origin in self._held

    def get(self, origin: bytes) -> Held | None:
        return self._held.get(origin)

    def sequence_of(self, origin: bytes) -> int | None:
        held = self._held.get(origin)
        return held.record.sequence if held else None

    def records(self) -> list[LinkStateRecord]:
        return [held.record for held in self._held.values()]

    def offer(
        self, record: LinkStateRecord, encoded: bytes, now_ms: int, skew_ms: int
    ) -> tuple[Offer, LinkStateRecord | None]:
        """Keep `record` if newer than what we hold; returns the outcome and the replaced one."""
        held = self._held.get(record.origin)
        if held is not None and record.sequence <= held.record.sequence:
            return Offer.STALE, None
        if record.expires_at_ms <= now_ms:
            return Offer.EXPIRED, None
        if record.issued_at_ms > now_ms + skew_ms:
            return Offer.FUTURE, None
        if not record.verify():
            return Offer.INVALID, None
        self.put(record, encoded)
        return Offer.NEW, held.record if held else None

    def put(self, record: LinkStateRecord, encoded: bytes) -> None:
        """Store without checks (our own records)."""
        origin = record.origin
        if origin not in self._held:
            bisect.insort(self._order, origin)
        self._held[origin] = Held(record, encoded)
        self.graph.set(record)
        self._bucket_hashes[bucket_of(origin)] = None
        if origin != self.own_origin:
            heapq.heappush(self._expiries, (record.expires_at_ms, origin, record.sequence))

    def remove(self, origin: bytes) -> None:
        if self._held.pop(origin, None) is not None:
            self.graph.remove(origin)
            del self._order[bisect.bisect_left(self._order, origin)]
            self._bucket_hashes[bucket_of(origin)] = None

    def _is_current(self, entry: tuple[int, bytes, int]) -> bool:
        held = self._held.get(entry[1])
        return held is not None and held.record.sequence == entry[2]

    def expire(self, now_ms: int) -> list[LinkStateRecord]:
        """Drop records whose expiry has passed (except our own); return them."""
        gone = []
        while self._expiries and self._expiries[0][0] <= now_ms:
            entry = heapq.heappop(self._expiries)
            if self._is_current(entry):
                gone.append(self._held[entry[1]].record)
                self.remove(entry[1])
        return gone

    def next_expiry_ms(self) -> int | None:
        """The earliest expiry among records other than our own."""
        while self._expiries and not self._is_current(self._expiries[0]):
            heapq.heappop(self._expiries)
        return self._expiries[0][0] if self._expiries else None

    def entries_in(self, low: bytes, high: bytes) -> list[tuple[bytes, int]]:
        """Sorted (origin, sequence) pairs with low <= origin <= high."""
        start = bisect.bisect_left(self._order, low)
        end = bisect.bisect_right(self._order, high)
        return [(o, self._held[o].record.sequence) for o in self._order[start:end]]

    def bucket_hash(self, bucket: int) -> bytes:
        cached = self._bucket_hashes[bucket]
        if cached is None:
            digest = hashlib.blake2b(digest_size=BUCKET_HASH_SIZE, person=b"gm-digest")
            for origin in self._order:
                if bucket_of(origin) == bucket:
                    digest.update(origin + self._held[origin].record.sequence.to_bytes(8, "big"))
            cached = digest.digest()
            self._bucket_hashes[bucket] = cached
        return cached

    def summary(self) -> Summary:
        return Summary(len(self._held), tuple(self.bucket_hash(b) for b in range(BUCKETS)))
