"""Bounded busy-polling: when it spins, what it catches, that it stops, and its env knob."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Callable, Iterator

import pytest

from gossipmesh.runtime.busypoll import (
    BUSY_POLL_ENV,
    DEFAULT_BUSY_POLL_US,
    LIGHT_WAKE_PACKETS,
    MAX_BUSY_POLL_US,
    BusyPoller,
    busy_poll_budget,
    install_busy_poll,
)


class FakeClock:
    """Advances by `step` on every reading, so a spin ends after budget/step polls."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += self.step
        return self.now


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking receiving UDP socket on loopback and a sender aimed at it."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    yield receiver, sender
    receiver.close()
    sender.close()


def drain(sock: socket.socket, into: list[bytes]) -> None:
    while True:
        try:
            into.append(sock.recv(2048))
        except BlockingIOError:
            return


@pytest.mark.parametrize(
    ("raw", "expected_us"),
    [
        (None, DEFAULT_BUSY_POLL_US),
        ("", DEFAULT_BUSY_POLL_US),
        ("0", 0),
        ("250", 250),
        (" 40 ", 40),
        ("-5", 0),
        ("lots", DEFAULT_BUSY_POLL_US),
        (str(MAX_BUSY_POLL_US * 10), MAX_BUSY_POLL_US),
    ],
)
def test_budget_comes_from_the_environment_bounded(raw: str | None, expected_us: int) -> None:
    environ = {} if raw is None else {BUSY_POLL_ENV: raw}
    assert busy_poll_budget(environ) == pytest.approx(expected_us / 1e6)


def test_a_wake_up_that_moved_no_packets_does_not_spin(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    received: list[bytes] = []
    poller = BusyPoller(
        [(receiver.fileno(), lambda: drain(receiver, received))],
        lambda: 0,  # control traffic only: the counters never move
        0.001,
        clock=FakeClock(1.0),
        idle=lambda: None,
    )
    sender.send(b"keepalive")
    poller.wrapped(receiver.fileno())()
    assert received == [b"keepalive"]
    assert poller.spins == 0


def test_the_spin_catches_what_arrives_on_any_fd_then_stops_at_the_budget(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    tun_side, tun_feeder = socket.socketpair()
    tun_side.setblocking(False)
    received: list[bytes] = []
    from_tun: list[bytes] = []
    moved = [0]
    arrivals: list[Callable[[], object]] = [
        lambda: sender.send(b"reply"),
        lambda: tun_feeder.send(b"packet"),
    ]
    feeds = iter(arrivals)

    def on_socket() -> None:
        before = len(received)
        drain(receiver, received)
        moved[0] += len(received) - before

    def on_tun() -> None:
        drain(tun_side, from_tun)
        moved[0] += 1

    def idle() -> None:  # what "time passing" brings: the next arrival, if any
        feed = next(feeds, None)
        if feed is not None:
            feed()

    clock = FakeClock(1e-6)
    poller = BusyPoller(
        [(receiver.fileno(), on_socket), (tun_side.fileno(), on_tun)],
        lambda: moved[0],
        50e-6,
        clock=clock,
        idle=idle,
    )
    try:
        sender.send(b"request")
        poller.wrapped(receiver.fileno())()
        assert received == [b"request", b"reply"]
        assert from_tun == [b"packet"]
        assert poller.spins == 1
        assert poller.caught == 2
        # Bounded: one reading for the deadline, then one per poll until it passes.
        assert 50 <= clock.readings <= 52
    finally:
        tun_side.close()
        tun_feeder.close()


def test_a_reader_that_never_empties_its_fd_still_ends_the_spin(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    calls = [0]

    def lazy_reader() -> None:  # leaves the datagram queued: poll stays ready
        calls[0] += 1

    sender.send(b"stuck")
    poller = BusyPoller(
        [(receiver.fileno(), lazy_reader)],
        lambda: calls[0],
        10e-6,
        clock=FakeClock(1e-6),
        idle=lambda: None,
    )
    poller.wrapped(receiver.fileno())()
    assert poller.spins == 1
    assert 5 <= calls[0] <= 12  # the first call plus about one per microsecond of budget


def test_a_bulk_batch_does_not_spin(pair: tuple[socket.socket, socket.socket]) -> None:
    receiver, sender = pair
    received: list[bytes] = []
    poller = BusyPoller(
        [(receiver.fileno(), lambda: drain(receiver, received))],
        lambda: len(received),
        0.001,
        clock=FakeClock(1e-6),
        idle=lambda: None,
    )
    for index in range(LIGHT_WAKE_PACKETS + 1):
        sender.send(bytes([index]))
    wait_readable(receiver)
    poller.wrapped(receiver.fileno())()
    assert len(received) == LIGHT_WAKE_PACKETS + 1
    assert poller.spins == 0


def wait_readable(sock: socket.socket) -> None:
    """Loopback delivery is synchronous, but say so: fail rather than race."""
    assert select.select([sock], [], [], 5.0)[0]


def test_install_is_a_no_op_when_turned_off(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, _ = pair

    async def body() -> BusyPoller | None:
        loop = asyncio.get_running_loop()
        loop.add_reader(receiver.fileno(), lambda: None)
        try:
            return install_busy_poll(
                loop, [(receiver.fileno(), lambda: None)], lambda: 0, {BUSY_POLL_ENV: "0"}
            )
        finally:
            loop.remove_reader(receiver.fileno())

    assert asyncio.run(body()) is None


def test_installed_poller_serves_the_loop_and_spins_after_packets(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    received: list[bytes] = []

    async def body() -> BusyPoller | None:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()

        def on_readable() -> None:
            drain(receiver, received)
            got.set()

        loop.add_reader(receiver.fileno(), on_readable)
        try:
            poller = install_busy_poll(
                loop,
                [(receiver.fileno(), on_readable)],
                lambda: len(received),
                {BUSY_POLL_ENV: "20"},
            )
            sender.send(b"data")
            await asyncio.wait_for(got.wait(), 5.0)
            return poller
        finally:
            loop.remove_reader(receiver.fileno())

    poller = asyncio.run(body())
    assert received == [b"data"]
    assert poller is not None
    assert poller.budget == pytest.approx(20e-6)
    assert poller.spins == 1
