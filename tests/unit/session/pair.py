"""Two (or more) session managers wired by an in-memory, lossless datagram switch.

The fake is only the network edge: each manager's datagrams_to_send go to the
manager whose address they name. Time is an explicit number; randomness comes
from a seeded `random.Random`, so every run is the same.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field

from gossipmesh.session.crypto import generate_keypair
from gossipmesh.session.events import SessionEvent
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.peer import Peer

WALL = 1_700_000_000.0
IPV4_PACKET = (
    bytes.fromhex("4500001c0000400040010000c0a80001c0a80002") + b"\x08\x00\xf7\xff\x00\x00\x00\x00"
)
IPV6_PACKET = (
    bytes.fromhex("6000000000083a40")
    + bytes.fromhex("fd000000000000000000000000000001")
    + bytes.fromhex("fd000000000000000000000000000002")
    + b"\x80\x00\x7f\xff\x00\x00\x00\x00"
)


def make_manager(
    seed: int, *, timer_scale: float = 1.0, under_load_threshold: int = 100
) -> SessionManager:
    rng = random.Random(seed)
    private, _ = generate_keypair(rng.randbytes)
    return SessionManager(
        private,
        random_bytes=rng.randbytes,
        wall_clock_offset=WALL,
        timer_scale=timer_scale,
        under_load_threshold=under_load_threshold,
    )


@dataclass
class Switch:
    """Delivers queued datagrams between managers by address; can drop or capture them."""

    nodes: dict[Hashable, SessionManager] = field(default_factory=dict)
    events: dict[Hashable, list[SessionEvent]] = field(default_factory=dict)
    captured: list[tuple[Hashable, bytes, Hashable]] = field(default_factory=list)
    drop: bool = False

    def add(self, addr: Hashable, manager: SessionManager) -> None:
        self.nodes[addr] = manager
        self.events[addr] = []

    def pump(self, now: float, rounds: int = 20) -> int:
        """Deliver until quiet (bounded); returns how many datagrams moved."""
        moved = 0
        for _ in range(rounds):
            batch = []
            for addr, manager in self.nodes.items():
                for data, destination in manager.datagrams_to_send(now):
                    self.captured.append((addr, data, destination))
                    batch.append((addr, data, destination))
            if not batch:
                break
            for source, data, destination in batch:
                target = self.nodes.get(destination)
                if target is not None and not self.drop:
                    target.receive_datagram(data, source, now)
                    moved += 1
        for addr, manager in self.nodes.items():
            while (event := manager.next_event()) is not None:
                self.events[addr].append(event)
        return moved

    def run_timers(self, until: float, step: float = 0.05) -> float:
        """Advance time to `until`, firing timers and delivering as they come."""
        now = min((m.get_timer() or until) for m in self.nodes.values())
        for _ in range(100_000):
            due = [m.get_timer() for m in self.nodes.values()]
            pending = [t for t in due if t is not None and t <= until]
            if not pending:
                break
            now = max(now, min(pending))
            for manager in self.nodes.values():
                manager.handle_timer(now)
            self.pump(now)
        return until


def connected_pair(
    *, timer_scale: float = 1.0, under_load_threshold: int = 100
) -> tuple[Switch, SessionManager, SessionManager]:
    """Managers "A" and "B" that know each other (no handshake yet)."""
    a = make_manager(1, timer_scale=timer_scale, under_load_threshold=under_load_threshold)
    b = make_manager(2, timer_scale=timer_scale, under_load_threshold=under_load_threshold)
    a.add_peer(b.static_public, 0.0, endpoint="B")
    b.add_peer(a.static_public, 0.0, endpoint="A")
    switch = Switch()
    switch.add("A", a)
    switch.add("B", b)
    return switch, a, b


def established_pair(
    *, timer_scale: float = 1.0, under_load_threshold: int = 100
) -> tuple[Switch, SessionManager, SessionManager]:
    """A and B after A initiated and B confirmed (B has received A's first message)."""
    switch, a, b = connected_pair(
        timer_scale=timer_scale, under_load_threshold=under_load_threshold
    )
    a.send(b.static_public, IPV4_PACKET, 0.0)
    switch.pump(0.0)
    assert b.peer(a.static_public) is not None
    assert b.peer(a.static_public).current is not None  # type: ignore[union-attr]
    return switch, a, b


def peer_of(manager: SessionManager, other: SessionManager) -> Peer:
    """`manager`'s peer record for `other` (which must be known)."""
    peer = manager.peer(other.static_public)
    assert peer is not None
    return peer
