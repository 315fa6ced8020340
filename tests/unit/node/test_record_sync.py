"""Records handed over by neighbours: copies we hold are dropped before the signature
check (the expensive part), while anything newer is still verified."""

from __future__ import annotations

from dataclasses import replace

from .harness import WALL_OFFSET, CoreNet
from .test_core import CONVERGE, run_until_true


def test_a_held_copy_is_dropped_unverified_and_a_newer_one_still_verified() -> None:
    net = CoreNet(2)
    net.start()
    a, b = net.members
    run_until_true(net, lambda: a.core.directory.record(b.identity.node_id) is not None, CONVERGE)
    held = a.core.directory.record(b.identity.node_id)
    assert held is not None
    counters = a.core.counters
    not_newer, refused = counters.records_not_newer, counters.records_refused
    wall = net.now + WALL_OFFSET

    assert a.core.records.accept(held.encode(), wall) is None
    assert counters.records_not_newer == not_newer + 1 and counters.records_refused == refused

    forged = replace(held, sequence=held.sequence + 1, name="mallory")  # old signature
    assert a.core.records.accept(forged.encode(), wall) is None
    assert counters.records_refused == refused + 1
    assert a.core.directory.record(b.identity.node_id) == held

    newer = replace(held, sequence=held.sequence + 1).signed(b.identity)
    assert a.core.records.accept(newer.encode(), wall) == newer
    assert a.core.directory.record(b.identity.node_id) == newer
