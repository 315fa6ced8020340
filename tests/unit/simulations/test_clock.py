"""The virtual-time loop: ordering, clock jumps, no wall-clock waiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from gossipmesh.simulations.clock import SimulationStalled, VirtualTimeLoop


@pytest.fixture
def loop() -> VirtualTimeLoop:
    created = VirtualTimeLoop()
    yield created
    created.close()


def test_timers_run_in_time_order_and_fifo_at_equal_times(loop: VirtualTimeLoop) -> None:
    seen: list[tuple[str, float]] = []
    for name, delay in [("c", 3.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0), ("b3", 2.0)]:
        loop.call_later(delay, lambda n=name: seen.append((n, loop.time())))
    loop.run_until(10.0)
    assert seen == [("a", 1.0), ("b1", 2.0), ("b2", 2.0), ("b3", 2.0), ("c", 3.0)]
    assert loop.time() == 10.0


def test_clock_jumps_to_next_timer_when_idle(loop: VirtualTimeLoop) -> None:
    times: list[float] = []
    loop.call_at(1234.5, lambda: times.append(loop.time()))
    loop.run_until(2000.0)
    assert times == [1234.5]


def test_cancelled_timers_do_not_run(loop: VirtualTimeLoop) -> None:
    ran: list[int] = []
    handles = [loop.call_later(1.0 + i, ran.append, i) for i in range(300)]
    for handle in handles[::2]:
        handle.cancel()
    loop.run_until(400.0)
    assert ran == list(range(1, 300, 2))


def test_real_asyncio_code_runs_unchanged(loop: VirtualTimeLoop) -> None:
    async def scenario() -> tuple[str, float, float]:
        started = loop.time()
        await asyncio.sleep(5)
        future = loop.create_future()
        loop.call_later(2, future.set_result, "reply")
        reply = await asyncio.wait_for(future, timeout=10)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.create_future(), timeout=30)
        return reply, started, loop.time()

    reply, started, ended = loop.run_until_complete(scenario())
    assert (reply, started, ended) == ("reply", 0.0, 37.0)


def test_an_hour_of_virtual_time_takes_no_wall_time(loop: VirtualTimeLoop) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while loop.time() < 3600:
            await asyncio.sleep(1)
            ticks += 1

    task = loop.create_task(ticker())
    wall = time.perf_counter()
    loop.run_until(3600.0)
    elapsed = time.perf_counter() - wall
    assert task.done() and ticks == 3600
    assert elapsed < 0.5, f"one virtual hour took {elapsed:.2f}s of wall time"


def test_stalled_loop_raises_instead_of_hanging(loop: VirtualTimeLoop) -> None:
    with pytest.raises(SimulationStalled):
        loop.run_until_complete(loop.create_future())


def test_cannot_run_backwards(loop: VirtualTimeLoop) -> None:
    loop.run_until(5.0)
    with pytest.raises(ValueError):
        loop.run_until(4.0)
