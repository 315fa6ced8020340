"""A virtual-time asyncio event loop: the clock jumps to the next timer.

Real asyncio code (kademlia, rpcudp, the gossipmesh runtime) runs on it
unchanged: futures, tasks, `call_later`, `asyncio.sleep` and `wait_for` all
work, but no wall-clock time passes while the loop waits. When no callback
is ready, `time()` jumps to the earliest timer. Timers due at the same
virtual instant run in the order they were scheduled (FIFO), so a run is a
pure function of its inputs.

There is no selector and no I/O: datagrams come from the simulated network,
which schedules deliveries as timers on this loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
from asyncio import events
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack

__all__ = ["SimulationStalled", "VirtualTimeLoop"]

_CLEANUP_MIN_TIMERS = 100
_CLEANUP_CANCELLED_FRACTION = 0.5

_Timer = tuple[float, int, events.TimerHandle]
_Ts = TypeVarTuple("_Ts")


class SimulationStalled(RuntimeError):
    """Nothing is ready and no timer is pending: the loop would wait forever."""


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """An event loop whose `time()` is virtual and advances only by jumping.

    `events_run` counts callbacks executed (a cost measure for scale runs).
    `datagram_endpoint_factory`, when set (the simulated network sets it),
    makes `create_datagram_endpoint(local_addr=...)` return a simulated
    endpoint, so code that opens its own UDP endpoint (kademlia's
    `Server.listen`) also runs here.
    """

    def __init__(self, start_time: float = 0.0) -> None:
        super().__init__()
        self._now = float(start_time)
        self._sequence = itertools.count()
        self._scheduled: list[_Timer] = []
        self._timer_cancelled_count = 0
        self.events_run = 0
        self._horizon = math.inf
        self.datagram_endpoint_factory: (
            Callable[[tuple[str, int]], asyncio.DatagramTransport] | None
        ) = None

    # -- the clock -------------------------------------------------------

    def time(self) -> float:
        """Virtual seconds since the simulation started."""
        return self._now

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> events.TimerHandle:
        """Schedule at virtual time `when`; equal times keep scheduling order."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()  # type: ignore[attr-defined]
        timer = events.TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._scheduled, (when, next(self._sequence), timer))
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def _timer_handle_cancelled(self, handle: events.TimerHandle) -> None:
        if handle._scheduled:  # type: ignore[attr-defined]
            self._timer_cancelled_count += 1

    def _drop_cancelled_timers(self) -> None:
        scheduled = self._scheduled
        cancelled = self._timer_cancelled_count
        if (
            len(scheduled) > _CLEANUP_MIN_TIMERS
            and cancelled / len(scheduled) > _CLEANUP_CANCELLED_FRACTION
        ):
            kept = []
            for entry in scheduled:
                if entry[2]._cancelled:
                    entry[2]._scheduled = False  # type: ignore[attr-defined]
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            self._scheduled = kept
            self._timer_cancelled_count = 0
            return
        while scheduled and scheduled[0][2]._cancelled:
            self._timer_cancelled_count -= 1
            heapq.heappop(scheduled)[2]._scheduled = False  # type: ignore[attr-defined]

    def _run_once(self) -> None:
        """Jump the clock if idle, move due timers to ready, run the ready ones."""
        self._drop_cancelled_timers()
        scheduled = self._scheduled
        ready = self._ready  # type: ignore[attr-defined]
        if not ready and not self._stopping:  # type: ignore[attr-defined]
            if not scheduled or scheduled[0][0] > self._horizon:
                if self._horizon == math.inf:
                    raise SimulationStalled(
                        f"nothing to run at virtual time {self._now:.6f}s and no timer pending"
                    )
                self._now = max(self._now, self._horizon)
                self.stop()
                return
            self._now = max(self._now, scheduled[0][0])
        now = self._now
        while scheduled and scheduled[0][0] <= now:
            timer = heapq.heappop(scheduled)[2]
            timer._scheduled = False  # type: ignore[attr-defined]
            ready.append(timer)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            self.events_run += 1
            handle._run()

    def run_until(self, when: float) -> None:
        """Run until nothing is left to do at or before virtual time `when`.

        Callbacks that become ready at `when` itself (a task woken by a
        timer due then) run too; the clock ends at exactly `when`.
        """
        if when < self._now:
            raise ValueError(f"cannot run back in time to {when} (now {self._now})")
        self._horizon = when
        try:
            self.run_forever()
        finally:
            self._horizon = math.inf

    def advance(self, seconds: float) -> None:
        """Run for `seconds` of virtual time."""
        self.run_until(self._now + seconds)

    # -- what a loop without I/O still has to provide -----------------------

    def _process_events(self, event_list: Any) -> None:
        return None

    def _write_to_self(self) -> None:
        return None

    async def create_datagram_endpoint(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        """Bind a simulated endpoint at `local_addr` on the attached network."""
        if self.datagram_endpoint_factory is None:
            raise RuntimeError("this virtual-time loop has no simulated network attached")
        if local_addr is None:
            raise ValueError("a simulated endpoint needs local_addr=(host, port)")
        transport = self.datagram_endpoint_factory(local_addr)
        protocol = protocol_factory()
        protocol.connection_made(transport)
        return transport, protocol
