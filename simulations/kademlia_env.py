"""Point the `kademlia` package's clock and randomness at the simulation.

kademlia's routing table and storage call `time.monotonic()` directly, its
bucket refresh draws from the global `random`, and rpcudp draws message ids
from `os.urandom`. Inside `kademlia_in_simulation(loop, rng)` those module
references are replaced by objects that read the virtual clock and a seeded
generator; everything is restored on exit. Nothing in kademlia is edited.

If gossipmesh.discovery already routes kademlia's clock to the running
loop's clock, the swap is harmless: within the simulation both read the
virtual loop. Module patches are process-wide, so a process runs one
simulation at a time (`SIMULATION_LOCK`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

__all__ = ["SIMULATION_LOCK", "kademlia_in_simulation"]

SIMULATION_LOCK = threading.RLock()
"""Held for the whole of a run: module-level patches allow one run per process."""

_QUIET_LOGGERS = ("kademlia", "rpcudp")


def _loop_clock(loop: asyncio.AbstractEventLoop) -> SimpleNamespace:
    """A stand-in for the `time` module whose monotonic() is the loop's clock."""
    return SimpleNamespace(
        monotonic=loop.time,
        time=time.time,
        perf_counter=time.perf_counter,
        sleep=time.sleep,
    )


@contextlib.contextmanager
def kademlia_in_simulation(loop: asyncio.AbstractEventLoop, rng: random.Random) -> Iterator[None]:
    """Within the block, kademlia and rpcudp follow `loop`'s clock and `rng`."""
    import kademlia.network
    import kademlia.protocol
    import kademlia.routing
    import kademlia.storage
    import rpcudp.protocol

    patches: list[tuple[Any, str, Any]] = [
        (kademlia.routing, "time", _loop_clock(loop)),
        (kademlia.storage, "time", _loop_clock(loop)),
        (kademlia.protocol, "random", rng),
        (kademlia.network, "random", rng),
        (rpcudp.protocol, "os", SimpleNamespace(urandom=rng.randbytes)),
    ]
    with SIMULATION_LOCK:
        saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
        levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
        try:
            for module, name, replacement in patches:
                setattr(module, name, replacement)
            # Timeouts to crashed or partitioned peers are the point of a
            # churn scenario; rpcudp logs each one at ERROR.
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
            yield
        finally:
            for module, name, original in saved:
                setattr(module, name, original)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
