"""Anti-entropy gossip and flooding broadcast of link-state records (sans-IO).

Anti-entropy, every `gossip_interval` with `gossip_fanout` random neighbours
(and at once with a neighbour that just came up):

1. A -> B  SUMMARY: record count and 16 bucket hashes of A's (origin, sequence) set.
2. B -> A  DIGEST for each bucket whose hash differs (nothing when all agree).
3. A -> B  RECORDS B lacks or holds older; REQUEST for origins where B is newer.
4. B -> A  RECORDS requested.

In a converged mesh a round costs one 135-byte SUMMARY per chosen neighbour.

Push: a node's new record is flooded at once as a BROADCAST; a node forwards
a flooded record to its other neighbours only when it was new to it, so each
record crosses each link at most once in each direction, and a copy is
refused by (origin, sequence) before any signature check. Application
broadcasts use the same flood, de-duplicated by (origin, broadcast id) in a
bounded `SeenSet`, with a hop budget as a second stop.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

from gossipmesh.routing.codec import MalformedMessage
from gossipmesh.routing.linkstate import LinkStateRecord
from gossipmesh.routing.messages import (
    BUCKETS,
    MAX_BROADCAST_BODY,
    BodyKind,
    Broadcast,
    Digest,
    GossipMessage,
    Records,
    Request,
    Summary,
    bucket_range,
    digests_for_range,
    records_batches,
    requests_for,
)
from gossipmesh.routing.seen import SeenSet
from gossipmesh.routing.store import Offer, RecordStore
from gossipmesh.routing.timing import RoutingTiming

BROADCAST_HOPS = 16
"""Hop budget of a flood: a second stop besides duplicate detection."""

Send = Callable[[bytes, bytes], None]
"""send(neighbour node id, payload)."""


@dataclass(frozen=True)
class Accepted:
    """A record newly accepted into the store, and the one it replaced."""

    record: LinkStateRecord
    previous: LinkStateRecord | None


@dataclass(frozen=True)
class OwnRecordSeen:
    """A record of our own origin at or above our sequence: an earlier incarnation of us."""

    sequence: int


@dataclass(frozen=True)
class ApplicationBroadcast:
    origin: bytes
    body: bytes


GossipOutcome = Accepted | OwnRecordSeen | ApplicationBroadcast


class GossipEngine:
    def __init__(
        self,
        own_id: bytes,
        store: RecordStore,
        timing: RoutingTiming,
        rng: random.Random,
        send: Send,
        count_drop: Callable[[str], None],
    ) -> None:
        self.own_id = own_id
        self.store = store
        self.timing = timing
        self.rng = rng
        self._send = send
        self._count_drop = count_drop
        self._seen = SeenSet(timing.seen_ttl)
        self._next_broadcast_id = rng.getrandbits(63)

    # --- anti-entropy -------------------------------------------------------

    def anti_entropy_round(self, neighbours: Collection[bytes]) -> None:
        """Offer our summary to a few random neighbours."""
        chosen = self.rng.sample(
            sorted(neighbours), min(self.timing.gossip_fanout, len(neighbours))
        )
        for neighbour in chosen:
            self.greet(neighbour)

    def greet(self, neighbour: bytes) -> None:
        self._send(neighbour, self.store.summary().encode())

    def _on_summary(self, sender: bytes, summary: Summary) -> None:
        for bucket in range(BUCKETS):
            if summary.bucket_hashes[bucket] == self.store.bucket_hash(bucket):
                continue
            low, high = bucket_range(bucket)
            for digest in digests_for_range(low, high, self.store.entries_in(low, high)):
                self._send(sender, digest.encode())

    def _on_digest(self, sender: bytes, digest: Digest) -> None:
        theirs = dict(digest.entries)
        ours = self.store.entries_in(digest.low, digest.high)
        push: list[bytes] = []
        for origin, sequence in ours:
            their_sequence = theirs.get(origin)
            if their_sequence is None or their_sequence < sequence:
                held = self.store.get(origin)
                if held is not None:
                    push.append(held.encoded)
        held_sequences = dict(ours)
        wanted = [
            origin
            for origin, sequence in digest.entries
            if held_sequences.get(origin, -1) < sequence
        ]
        for batch in records_batches(push):
            self._send(sender, batch.encode())
        for request in requests_for(wanted):
            self._send(sender, request.encode())

    def _on_request(self, sender: bytes, request: Request) -> None:
        found = [h.encoded for h in map(self.store.get, dict.fromkeys(request.origins)) if h]
        for batch in records_batches(found):
            self._send(sender, batch.encode())

    # --- records in ---------------------------------------------------------

    def offer(self, encoded: bytes, now: float) -> GossipOutcome | None:
        """De-duplicate, decode, verify and store one record; None when refused (counted).

        A copy at or below the sequence held is refused from its header alone
        (`record_stale`, also when the rest of it is malformed).
        """
        peeked = LinkStateRecord.peek(encoded)
        if peeked is not None:
            held = self.store.sequence_of(peeked[0])
            if held is not None and peeked[1] <= held:
                self._count_drop("record_stale")
                return None
        try:
            record = LinkStateRecord.decode(encoded)
        except MalformedMessage:
            self._count_drop("record_malformed")
            return None
        if record.origin == self.own_id:
            held = self.store.sequence_of(self.own_id)
            if held is not None and record.sequence <= held:
                self._count_drop("record_stale")
                return None
            if not record.verify():
                self._count_drop("record_invalid")
                return None
            return OwnRecordSeen(record.sequence)
        outcome, previous = self.store.offer(
            record, encoded, round(now * 1000), round(self.timing.max_clock_skew * 1000)
        )
        if outcome is not Offer.NEW:
            self._count_drop(f"record_{outcome.value}")
            return None
        return Accepted(record, previous)

    # --- broadcast ----------------------------------------------------------

    def flood_record(
        self, record: LinkStateRecord, encoded: bytes, neighbours: Collection[bytes]
    ) -> None:
        """Push a record to every neighbour (our own new records: urgent news)."""
        message = Broadcast(
            record.origin, record.sequence, BROADCAST_HOPS, BodyKind.LINK_STATE_RECORD, encoded
        ).encode()
        for neighbour in sorted(neighbours):
            self._send(neighbour, message)

    def broadcast(self, body: bytes, neighbours: Collection[bytes], now: float) -> None:
        """Flood opaque bytes to every node of the mesh, each receiving them once."""
        if len(body) > MAX_BROADCAST_BODY:
            raise ValueError(f"a broadcast body is at most {MAX_BROADCAST_BODY} bytes")
        broadcast_id = self._next_broadcast_id
        self._next_broadcast_id = (broadcast_id + 1) % 2**64
        self._seen.add((self.own_id, broadcast_id), now)
        message = Broadcast(self.own_id, broadcast_id, BROADCAST_HOPS, BodyKind.APPLICATION, body)
        for neighbour in sorted(neighbours):
            self._send(neighbour, message.encode())

    def _on_broadcast(
        self, sender: bytes, message: Broadcast, neighbours: Collection[bytes], now: float
    ) -> GossipOutcome | None:
        outcome: GossipOutcome | None
        if message.body_kind == BodyKind.LINK_STATE_RECORD:
            outcome = self.offer(message.body, now)
            if isinstance(outcome, Accepted) and (
                outcome.record.origin != message.origin
                or outcome.record.sequence != message.broadcast_id
            ):
                self._count_drop("broadcast_mismatch")
        elif message.body_kind == BodyKind.APPLICATION:
            if message.origin == self.own_id or not self._seen.add(
                (message.origin, message.broadcast_id), now
            ):
                self._count_drop("broadcast_duplicate")
                return None
            outcome = ApplicationBroadcast(message.origin, message.body)
        else:
            self._count_drop("broadcast_unknown_body")
            return None
        if outcome is None or isinstance(outcome, OwnRecordSeen):
            return outcome
        if message.hops_left > 1:
            forwarded = Broadcast(
                message.origin,
                message.broadcast_id,
                message.hops_left - 1,
                message.body_kind,
                message.body,
            ).encode()
            for neighbour in sorted(neighbours):
                if neighbour != sender and neighbour != message.origin:
                    self._send(neighbour, forwarded)
        return outcome

    # --- dispatch -----------------------------------------------------------

    def receive(
        self, sender: bytes, message: GossipMessage, neighbours: Collection[bytes], now: float
    ) -> list[GossipOutcome]:
        if isinstance(message, Summary):
            self._on_summary(sender, message)
        elif isinstance(message, Digest):
            self._on_digest(sender, message)
        elif isinstance(message, Request):
            self._on_request(sender, message)
        elif isinstance(message, Records):
            outcomes = [self.offer(encoded, now) for encoded in message.records]
            return [o for o in outcomes if o is not None]
        else:
            outcome = self._on_broadcast(sender, message, neighbours, now)
            return [outcome] if outcome is not None else []
        return []
