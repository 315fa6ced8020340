"""A minimal virtual-time asyncio loop for tests: when nothing is ready, time jumps.

Not the simulator (which owns the real one); just enough to show that the DHT
reads no clock but the loop's. Only for programs whose I/O is in memory: the
selector never blocks, it advances the clock to the next timer instead.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class _JumpingSelector(selectors.SelectSelector):
    def __init__(self, loop_clock: list[float]) -> None:
        super().__init__()
        self._clock = loop_clock

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self._clock[0] += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """loop.time() starts at 0 and advances only by jumping to the next timer."""

    def __init__(self) -> None:
        self._virtual_now = [0.0]
        super().__init__(_JumpingSelector(self._virtual_now))

    def time(self) -> float:
        return self._virtual_now[0]
