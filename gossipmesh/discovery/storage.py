"""DHT storage that only holds verified, unexpired records.

Why not `kademlia.storage.ForgetfulStorage`: it stores any value under any key
(so any node could overwrite any record), expires by a fixed TTL on
`time.monotonic()` instead of by each record's own signed expiry, and reads the
wall clock directly. `RecordStorage` keeps kademlia's `IStorage` interface but
decodes and validates every value (`records.validate`), checks that the key
belongs to the record (node records under the node id, name records under
`name_key(name)`), refuses older sequences, drops records when their signed
`expires_at` passes, and bounds how many records it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kademlia.storage import IStorage

from gossipmesh.records import (
    Record,
    RecordError,
    RefusalReason,
    decode_record,
    record_key,
    validate,
)

MAX_STORED_RECORDS = 65536
"""A member can mint keys cheaply; this bounds the memory its records can take."""


@dataclass(frozen=True)
class StoredRecord:
    stored_at: float
    """Loop time of the last store (kademlia's `iter_older_than` asks about it)."""
    value: bytes
    record: Record


class RecordStorage(IStorage):  # type: ignore[misc]
    """kademlia's storage interface over verified records; `__setitem__` raises RecordError."""

    def __init__(
        self,
        wall_clock: Callable[[], float],
        loop_clock: Callable[[], float],
        capacity: int = MAX_STORED_RECORDS,
        admit: Callable[[Record, float], bool] | None = None,
    ) -> None:
        self._wall_clock = wall_clock
        self._admit = admit
        """The node's trust gate: in a network with an authority, only certified records."""
        self._loop_clock = loop_clock
        self._capacity = capacity
        self._entries: dict[bytes, StoredRecord] = {}
        self._next_cull = float("-inf")

    def offer(self, key: bytes, value: object) -> bool:
        """Verify and store `value` under `key`; True when it changed what is held.

        Raises RecordError (with the reason) when the record is refused.
        """
        if not isinstance(value, bytes):
            raise RecordError(RefusalReason.MALFORMED, "a stored value must be bytes")
        record = decode_record(value)
        if record_key(record) != key:
            raise RecordError(RefusalReason.WRONG_KEY, "record does not belong under this key")
        now = self._wall_clock()
        entry = self._entries.get(key)
        held = entry.record if entry is not None else None
        validate(record, now, held)
        if self._admit is not None and not self._admit(record, now):
            raise RecordError(RefusalReason.NOT_ADMITTED)
        if entry is None:
            self._cull(now, force=len(self._entries) >= self._capacity)
            if len(self._entries) >= self._capacity:
                raise RecordError(RefusalReason.STORAGE_FULL)
        changed = entry is None or entry.value != value
        self._entries[key] = StoredRecord(self._loop_clock(), value, record)
        return changed

    def record(self, key: bytes) -> Record | None:
        """The unexpired record held under `key`, if any."""
        entry = self._live(key)
        return entry.record if entry is not None else None

    def _live(self, key: bytes) -> StoredRecord | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.record.expires_at <= self._wall_clock():
            del self._entries[key]
            return None
        return entry

    def _cull(self, now: float, force: bool = False) -> None:
        """Drop expired records, at most once a second unless forced (it is O(n))."""
        loop_now = self._loop_clock()
        if not force and loop_now < self._next_cull:
            return
        self._next_cull = loop_now + 1.0
        expired = [key for key, e in self._entries.items() if e.record.expires_at <= now]
        for key in expired:
            del self._entries[key]

    # --- kademlia's IStorage ---------------------------------------------------

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.offer(key, value)

    def __getitem__(self, key: bytes) -> bytes:
        entry = self._live(key)
        if entry is None:
            raise KeyError(key)
        return entry.value

    def get(self, key: bytes, default: Any = None) -> Any:
        entry = self._live(key)
        return entry.value if entry is not None else default

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        threshold = self._loop_clock() - seconds_old
        return [(k, e.value) for k, e in self._unexpired() if e.stored_at <= threshold]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter([(k, e.value) for k, e in self._unexpired()])

    def _unexpired(self) -> list[tuple[bytes, StoredRecord]]:
        now = self._wall_clock()
        self._cull(now)
        return [(k, e) for k, e in self._entries.items() if e.record.expires_at > now]

    def __len__(self) -> int:
        self._cull(self._wall_clock())
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._live(key) is not None
