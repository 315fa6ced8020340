"""The one place that points `kademlia`'s own clock reads at the running asyncio loop.

`kademlia.routing` (bucket freshness, `lonely_buckets`) and `kademlia.storage`
call `time.monotonic()` directly. On a virtual-time loop (the simulator) that
would make bucket refresh follow wall time. `use_loop_clock()` replaces the
`time` name inside those two modules with a stand-in whose `monotonic()` is
the running loop's `time()`. In the real daemon this changes nothing: asyncio's
default loop clock *is* `time.monotonic()`. Outside a running loop the stand-in
falls back to `time.monotonic()`. The replacement is process-wide and
idempotent; our own storage (`RecordStorage`) never uses `time` at all.
"""

from __future__ import annotations

import asyncio
import time


class _LoopTime:
    """Stands in for the `time` module inside kademlia's routing and storage modules."""

    @staticmethod
    def monotonic() -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()


LOOP_TIME = _LoopTime()


def use_loop_clock() -> None:
    """Make kademlia's routing table and storage read the running loop's clock."""
    import kademlia.routing
    import kademlia.storage

    kademlia.routing.time = LOOP_TIME
    kademlia.storage.time = LOOP_TIME
