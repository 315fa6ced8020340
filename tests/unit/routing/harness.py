"""An in-memory mesh of RoutingCores with a fake clock, for deterministic tests.

Only the message delivery and the clock are fake: every core is the real
RoutingCore. Messages travel only over edges of the topology (enforced here,
not by luck), with a one-way delay of half the edge's RTT.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from gossipmesh.identity import Identity
from gossipmesh.routing.core import RoutingCore, RoutingEvent
from gossipmesh.routing.timing import RoutingTiming

START = 1_700_000_000.0
MAX_STEPS = 2_000_000


def identity_for(index: int, salt: bytes = b"") -> Identity:
    return Identity.from_seed(
        hashlib.sha256(b"mesh-node" + salt + index.to_bytes(4, "big")).digest()
    )


@dataclass
class Mesh:
    seed: int = 1
    timing: RoutingTiming = field(default_factory=RoutingTiming)
    max_hops: int = 8
    now: float = START
    cores: dict[bytes, RoutingCore] = field(default_factory=dict)
    rtt: dict[frozenset[bytes], float] = field(default_factory=dict)
    """Edges of the topology and their RTT in seconds."""
    events: dict[bytes, list[RoutingEvent]] = field(default_factory=dict)
    undeliverable: int = 0
    loss: float = 0.0
    """Fraction of messages lost in transit (drawn from the seeded rng)."""
    lost: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._queue: list[tuple[float, int, bytes, bytes, bytes]] = []
        self._counter = 0
        self._timers: dict[bytes, float | None] = {}
        self.offsets: dict[bytes, float] = {}

    # --- building -------------------------------------------------------------

    def add_node(self, identity: Identity, clock_offset: float = 0.0) -> bytes:
        """A node whose wall clock reads `clock_offset` seconds away from true time."""
        core = RoutingCore(
            identity,
            random.Random(self.rng.getrandbits(64)),
            self.now + clock_offset,
            max_hops=self.max_hops,
            timing=self.timing,
        )
        self.cores[core.own_id] = core
        self.offsets[core.own_id] = clock_offset
        self.events.setdefault(core.own_id, [])
        self.drain(core)
        return core.own_id

    def connect(self, a: bytes, b: bytes, rtt: float) -> None:
        """An edge exists and both ends' sessions come up."""
        self.rtt[frozenset((a, b))] = rtt
        for x, y in ((a, b), (b, a)):
            if x in self.cores:
                self.cores[x].neighbour_up(y, self.local_time(x))
                self.drain(self.cores[x])

    def disconnect(self, a: bytes, b: bytes, *, tell: bool = True) -> None:
        """Remove an edge; with tell=False the sessions do not notice (keepalives must)."""
        self.rtt.pop(frozenset((a, b)), None)
        if tell:
            for x, y in ((a, b), (b, a)):
                if x in self.cores:
                    self.cores[x].neighbour_down(y, self.local_time(x))
                    self.drain(self.cores[x])

    def remove_node(self, node: bytes) -> None:
        """The node vanishes without a word: its edges stop carrying anything."""
        self.cores.pop(node)
        self._timers.pop(node, None)
        for edge in [e for e in self.rtt if node in e]:
            del self.rtt[edge]

    # --- running --------------------------------------------------------------

    def local_time(self, node: bytes) -> float:
        return self.now + self.offsets.get(node, 0.0)

    def drain(self, core: RoutingCore) -> None:
        timer = core.get_timer()
        offset = self.offsets[core.own_id]
        self._timers[core.own_id] = None if timer is None else timer - offset
        for target, payload in core.messages_to_send():
            self.send(core.own_id, target, payload)
        self.events[core.own_id].extend(core.events())

    def send(self, source: bytes, target: bytes, payload: bytes) -> None:
        rtt = self.rtt.get(frozenset((source, target)))
        if rtt is None:
            self.undeliverable += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return
        self._counter += 1
        heapq.heappush(self._queue, (self.now + rtt / 2, self._counter, source, target, payload))

    def run_until(self, deadline: float) -> None:
        for _ in range(MAX_STEPS):
            timers = [(t, n) for n, t in self._timers.items() if t is not None and n in self.cores]
            next_timer = min(timers) if timers else None
            next_message = self._queue[0][0] if self._queue else None
            candidates = [t for t in (next_message, next_timer and next_timer[0]) if t is not None]
            if not candidates or min(candidates) > deadline:
                self.now = deadline
                return
            if next_message is not None and (next_timer is None or next_message <= next_timer[0]):
                at, _, source, target, payload = heapq.heappop(self._queue)
                self.now = max(self.now, at)
                core = self.cores.get(target)
                if core is None or frozenset((source, target)) not in self.rtt:
                    self.undeliverable += 1
                    continue
                if source not in core.neighbours():
                    # As the node does: a control payload over the direct path re-confirms it.
                    core.neighbour_up(source, self.local_time(target))
                core.receive_control(source, payload, self.local_time(target))
                self.drain(core)
            else:
                assert next_timer is not None
                self.now = max(self.now, next_timer[0])
                core = self.cores[next_timer[1]]
                local = self.local_time(core.own_id)
                core.handle_timer(local)
                self.drain(core)
                timer = core.get_timer()
                # A timer left in the past would be a busy loop in the daemon.
                assert timer is None or timer > local, "handle_timer left its timer due"
        raise AssertionError("simulation did not reach its deadline within the step bound")

    def run_until_true(self, condition: object, limit: float, step: float = 0.05) -> float:
        """Advance in small steps until condition() holds; return the time it took."""
        assert callable(condition)
        start = self.now
        while self.now - start < limit:
            if condition():
                return self.now - start
            self.run_until(self.now + step)
        if condition():
            return self.now - start
        raise AssertionError(f"condition not met within {limit} s of simulated time")

    # --- views ----------------------------------------------------------------

    def record_sets(self) -> list[frozenset[tuple[bytes, int]]]:
        return [
            frozenset((o, r.sequence) for o, r in core.records().items())
            for core in self.cores.values()
        ]

    def converged(self) -> bool:
        sets = self.record_sets()
        return all(s == sets[0] for s in sets) and {o for o, _ in sets[0]} == set(self.cores)

    def bytes_out(self) -> dict[bytes, int]:
        return {n: c.stats.total_bytes_out() for n, c in self.cores.items()}

    def all_reachable(self) -> bool:
        ids = set(self.cores)
        return all(set(c.table.routes) == ids - {n} for n, c in self.cores.items())


def line_with_chords(
    mesh: Mesh, count: int, chords: int, rng: random.Random, salt: bytes = b""
) -> list[bytes]:
    """The issue's topology: a line plus random chords, RTTs of 2-30 ms."""
    nodes = [mesh.add_node(identity_for(i, salt)) for i in range(count)]
    edges: set[tuple[int, int]] = {(i, i + 1) for i in range(count - 1)}
    while len(edges) < count - 1 + chords:
        a, b = sorted(rng.sample(range(count), 2))
        if b - a > 1:
            edges.add((a, b))
    for a, b in sorted(edges):
        mesh.connect(nodes[a], nodes[b], rng.uniform(0.002, 0.030))
    return nodes
