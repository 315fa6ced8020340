"""Relay envelopes: an end-to-end message carried through hop-by-hop sessions.

When A has no direct session to C, A's WireGuard message for C (already
encrypted end to end, so relays cannot read it) travels as a RELAY control
payload inside the A->B and B->C sessions::

    RELAY u8 | version u8 | hop limit u8 | envelope id u64 | source id (20)
    | destination id (20) | inner message (the rest)

`RELAY_OVERHEAD` (51 bytes) is added to the inner message once, however many
relays it crosses (each relay re-wraps it in its own session, adding that
session's 32 bytes of WireGuard framing).

Hop limit: the number of links the envelope may still cross after the one it
arrived on. The source sets max_hops - 1; a relay drops an envelope that
arrives with 0, else forwards it with one less, so a path of at most
`max_hops` links is delivered and anything longer is dropped.

Forwarding decision, in order: malformed -> drop; our own envelope came back
-> drop (loop); (source, envelope id) seen -> drop (duplicate); for us ->
deliver; hop limit 0 -> drop; next hop is the destination itself when it is
a live neighbour, else the routing table's; none -> drop (no route); the next
hop is where it came from or its source -> drop (loop); else forward.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from gossipmesh.routing.codec import PROTOCOL_VERSION, MalformedMessage
from gossipmesh.routing.seen import SeenSet
from gossipmesh.wire import PayloadKind

_HEADER = struct.Struct("!BBBQ20s20s")
RELAY_OVERHEAD = _HEADER.size
MAX_RELAY_PAYLOAD = 65535
"""An envelope is a data-plane packet: bounded by a UDP datagram, not by the control bound."""


@dataclass(frozen=True)
class RelayEnvelope:
    source: bytes
    destination: bytes
    hop_limit: int
    envelope_id: int
    inner: bytes

    def encode(self) -> bytes:
        return (
            _HEADER.pack(
                PayloadKind.RELAY,
                PROTOCOL_VERSION,
                self.hop_limit,
                self.envelope_id,
                self.source,
                self.destination,
            )
            + self.inner
        )

    @classmethod
    def decode(cls, data: bytes) -> RelayEnvelope:
        if len(data) < _HEADER.size:
            raise MalformedMessage("relay envelope truncated")
        if len(data) > MAX_RELAY_PAYLOAD:
            raise MalformedMessage("relay envelope too large")
        kind, version, hop_limit, envelope_id, source, destination = _HEADER.unpack_from(data)
        if kind != PayloadKind.RELAY:
            raise MalformedMessage("not a relay envelope")
        if version != PROTOCOL_VERSION:
            raise MalformedMessage(f"unsupported routing protocol version {version}")
        if source == destination:
            raise MalformedMessage("relay envelope addressed to its own source")
        return cls(source, destination, hop_limit, envelope_id, data[_HEADER.size :])


class DropReason(Enum):
    MALFORMED = "malformed"
    HOP_LIMIT = "hop_limit_exceeded"
    NO_ROUTE = "no_route"
    LOOP = "loop"
    DUPLICATE = "duplicate"


# Actions are NamedTuples, not frozen dataclasses: one is built per relayed packet.


class Deliver(NamedTuple):
    """An envelope for us: hand `inner` to the session layer as from `source`."""

    source: bytes
    inner: bytes


class Forward(NamedTuple):
    next_hop: bytes
    payload: bytes


class Drop(NamedTuple):
    reason: DropReason


RelayAction = Deliver | Forward | Drop


class Relay:
    """Wraps our own envelopes and decides what to do with received ones."""

    def __init__(self, own_id: bytes, rng: random.Random, max_hops: int, seen_ttl: float) -> None:
        self.own_id = own_id
        self.max_hops = max_hops
        self._next_id = rng.getrandbits(64)
        self._seen = SeenSet(seen_ttl, capacity=65536)
        self.counts: Counter[str] = Counter()

    def wrap(self, destination: bytes, inner: bytes) -> bytes:
        """Our envelope for `destination`, to send to the next hop."""
        envelope_id = self._next_id
        self._next_id = (envelope_id + 1) % 2**64
        self.counts["originated"] += 1
        header = _HEADER.pack(
            PayloadKind.RELAY,
            PROTOCOL_VERSION,
            max(0, self.max_hops - 1),
            envelope_id,
            self.own_id,
            destination,
        )
        return header + inner

    def receive(
        self,
        previous_hop: bytes,
        payload: bytes,
        now: float,
        next_hop_for: Callable[[bytes], bytes | None],
    ) -> RelayAction:
        action = self._decide(previous_hop, payload, now, next_hop_for)
        if isinstance(action, Drop):
            self.counts[f"dropped_{action.reason.value}"] += 1
        elif isinstance(action, Deliver):
            self.counts["delivered"] += 1
        else:
            self.counts["forwarded"] += 1
        return action

    def _decide(
        self,
        previous_hop: bytes,
        payload: bytes,
        now: float,
        next_hop_for: Callable[[bytes], bytes | None],
    ) -> RelayAction:
        # The per-packet path of a relay: header fields only, the inner bytes are copied once.
        if not _HEADER.size <= len(payload) <= MAX_RELAY_PAYLOAD:
            return Drop(DropReason.MALFORMED)
        kind, version, hop_limit, envelope_id, source, destination = _HEADER.unpack_from(payload)
        if kind != PayloadKind.RELAY or version != PROTOCOL_VERSION or source == destination:
            return Drop(DropReason.MALFORMED)
        if source == self.own_id:
            return Drop(DropReason.LOOP)
        if not self._seen.add((source, envelope_id), now):
            return Drop(DropReason.DUPLICATE)
        if destination == self.own_id:
            return Deliver(source, payload[_HEADER.size :])
        if hop_limit == 0:
            return Drop(DropReason.HOP_LIMIT)
        next_hop = next_hop_for(destination)
        if next_hop is None:
            return Drop(DropReason.NO_ROUTE)
        if next_hop in (previous_hop, source):
            return Drop(DropReason.LOOP)
        return Forward(next_hop, _FORWARD_PREFIX[hop_limit - 1] + payload[3:])


_FORWARD_PREFIX = [bytes((PayloadKind.RELAY, PROTOCOL_VERSION, limit)) for limit in range(256)]
