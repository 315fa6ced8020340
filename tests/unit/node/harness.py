"""Node cores wired back to back in one test, with no event loop and explicit time.

`CoreNet` plays every driver at once: it moves datagrams between cores
(only between pairs that `allowed` permits, so a topology holds by
construction), carries out their requests against an in-memory record store
standing in for the DHT service (the OS edge of the core), and advances one
virtual clock from deadline to deadline. Everything the cores decide —
handshakes, probing, relaying, records, routes — is the real code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.node.core import NodeCore
from gossipmesh.node.events import (
    ConnectLink,
    DhtDatagram,
    FetchRecords,
    NodeEvent,
    ProbeEndpoints,
    PublishRecords,
    SaveAddressState,
    SaveDocument,
)
from gossipmesh.node.options import NodeOptions
from gossipmesh.records import NodeRecord

SECRET = NetworkSecret(b"node core unit test secret 0123456789")
WALL_OFFSET = 1_800_000_000.0
Address = tuple[str, int]
MAX_STEPS = 200_000
"""Bound on the work one `run_until` may do: a core that never settles fails the test."""


def address_of(index: int) -> Address:
    """A label for node `index`'s UDP endpoint; nothing is ever sent to it for real."""
    return ("127.0.0.1", 41000 + index)


@dataclass
class Member:
    """One core and what its driver would keep: TUN output, events, the address file."""

    index: int
    identity: Identity
    core: NodeCore
    delivered: list[bytes] = field(default_factory=list)
    events: list[NodeEvent] = field(default_factory=list)
    saved_address: dict[str, Any] | None = None
    saved_documents: dict[int, bytes] = field(default_factory=dict)
    up: bool = True


class CoreNet:
    """N node cores on one virtual clock; `allowed` pairs may exchange datagrams (None: all)."""

    def __init__(
        self,
        size: int,
        *,
        allowed: set[frozenset[int]] | None = None,
        seed: int = 7,
        start: float = 100.0,
        max_neighbours: int = NodeOptions.max_neighbours,
        options: Callable[[int, Identity], dict[str, Any]] | None = None,
    ) -> None:
        self.now = start
        self.max_neighbours = max_neighbours
        self.extra_options = options or (lambda index, identity: {})
        """More NodeOptions fields per node (an authority key, a certificate...)."""
        self.allowed = allowed
        self.rng = random.Random(seed)
        self.dht: dict[bytes, NodeRecord] = {}
        """Published node records by node id: the stand-in for the DHT."""
        self.members: list[Member] = []
        self.sent: list[tuple[int, int, bytes]] = []
        """(from, to, datagram) for every datagram that crossed the network."""
        for index in range(size):
            identity = Identity.from_seed(self.rng.randbytes(32))
            self.members.append(Member(index, identity, self._build(index, identity, None)))

    def _build(self, index: int, identity: Identity, saved: object) -> NodeCore:
        fields: dict[str, Any] = {
            "name": f"node{index}",
            "listen_port": address_of(index)[1],
            "host_endpoints": (address_of(index),),
            "timer_scale": 10.0,
            "probe_interval": 5.0,
            "directory_interval": 5.0,
            "max_neighbours": self.max_neighbours,
        }
        options = NodeOptions(**{**fields, **self.extra_options(index, identity)})
        stream = random.Random(self.rng.getrandbits(64))
        return NodeCore(
            identity,
            SECRET,
            options,
            now=self.now,
            wall_offset=WALL_OFFSET,
            rng=stream,
            random_bytes=stream.randbytes,
            saved_address=saved,
        )

    # --- topology ----------------------------------------------------------------

    def permits(self, a: int, b: int) -> bool:
        if not (self.members[a].up and self.members[b].up):
            return False
        return self.allowed is None or frozenset((a, b)) in self.allowed

    def allow(self, a: int, b: int) -> None:
        assert self.allowed is not None
        self.allowed.add(frozenset((a, b)))

    def _index_at(self, addr: Address) -> int | None:
        for member in self.members:
            if address_of(member.index) == addr:
                return member.index
        return None

    # --- life cycle --------------------------------------------------------------

    def start(self, *indexes: int) -> None:
        for index in indexes or range(len(self.members)):
            member = self.members[index]
            member.core.dht_contacts(list(self.dht), None, self.now)
            member.core.start(self.now)
        self.settle()

    def crash(self, index: int) -> None:
        """The node vanishes: nothing it says reaches anyone any more."""
        self.members[index].up = False

    def restart(self, index: int) -> NodeCore:
        """A new core with the same key and the address file the old one saved."""
        old = self.members[index]
        core = self._build(index, old.identity, old.saved_address)
        self.members[index] = Member(
            index, old.identity, core, saved_address=old.saved_address, up=True
        )
        self.start(index)
        return core

    # --- moving output -------------------------------------------------------------

    def settle(self) -> None:
        """Move datagrams and carry out requests until every core is quiet."""
        for _ in range(MAX_STEPS):
            if not self._step():
                return
        raise AssertionError("the cores did not settle")

    def _step(self) -> bool:
        busy = False
        for member in self.members:
            core = member.core
            if not member.up:
                core.datagrams_to_send()
                core.tun_packets_to_write()
                while core.next_request() is not None:
                    pass
                continue
            member.delivered.extend(core.tun_packets_to_write())
            while (event := core.next_event()) is not None:
                member.events.append(event)
            while (request := core.next_request()) is not None:
                busy = True
                self._carry_out(member, request)
            for datagram, addr in core.datagrams_to_send():
                busy = True
                target = self._index_at(addr)
                if target is None or not self.permits(member.index, target):
                    continue
                self.sent.append((member.index, target, bytes(datagram)))
                self.members[target].core.receive_datagram(
                    datagram, address_of(member.index), self.now
                )
        return busy

    def _carry_out(self, member: Member, request: object) -> None:
        core = member.core
        if isinstance(request, PublishRecords):
            record = request.node_record.signed(member.identity)
            self.dht[record.node_id] = record
            core.records_published(record, self.now)
        elif isinstance(request, FetchRecords):
            found = [self.dht[n] for n in request.node_ids if n in self.dht]
            core.dht_contacts(list(self.dht), None, self.now)
            core.records_fetched(found, self.now, round_finished=request.periodic)
        elif isinstance(request, ProbeEndpoints):
            answered = next(
                (
                    endpoint
                    for endpoint in request.candidates
                    if (target := self._index_at(endpoint)) is not None
                    and self.permits(member.index, target)
                ),
                None,
            )
            core.probe_finished(request.node_id, answered, request.answering, self.now)
        elif isinstance(request, SaveAddressState):
            member.saved_address = request.state
        elif isinstance(request, SaveDocument):
            member.saved_documents[request.kind] = request.data
        elif isinstance(request, ConnectLink):
            core.links.connect_failed(request.order.peer_key, self.now)
        elif isinstance(request, DhtDatagram):
            pass  # no DHT traffic between these cores: the record store answers for it

    # --- time ----------------------------------------------------------------------

    def run_until(self, until: float) -> None:
        """Advance the clock deadline by deadline to `until`, letting every core act."""
        for _ in range(MAX_STEPS):
            due = [t for m in self.members if m.up and (t := m.core.get_timer()) is not None]
            next_due = min(due, default=None)
            if next_due is None or next_due > until:
                self.now = until
                return
            self.now = max(self.now, next_due)
            for member in self.members:
                timer = member.core.get_timer()
                if member.up and timer is not None and timer <= self.now:
                    member.core.handle_timer(self.now)
            self.settle()
        raise AssertionError("time did not advance (a timer that never moves on)")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)
