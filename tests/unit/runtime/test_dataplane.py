"""The batching data plane: GSO runs, GRO cmsgs, and real loopback sockets end to end."""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipmesh.runtime import dataplane
from gossipmesh.runtime.dataplane import DataPlane, gro_segment_size, gso_runs

ADDRESSES = [("127.0.0.1", 1), ("127.0.0.1", 2)]


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=2000), st.sampled_from(ADDRESSES)),
        max_size=200,
    )
)
def test_gso_runs_cover_the_queue_with_sendable_runs(
    items: list[tuple[int, tuple[str, int]]],
) -> None:
    pending = [(bytes(size), address) for size, address in items]
    runs = gso_runs(pending)
    assert [index for start, end in runs for index in range(start, end)] == list(
        range(len(pending))
    )
    for start, end in runs:
        run = pending[start:end]
        size = len(run[0][0])
        assert all(address == run[0][1] for _, address in run)
        assert end - start <= dataplane.GSO_MAX_SEGMENTS
        if end - start > 1:
            assert sum(len(data) for data, _ in run) <= dataplane.GSO_MAX_BYTES
            assert all(len(data) == size for data, _ in run[:-1])
            assert 0 < len(run[-1][0]) <= size


def test_gso_runs_join_equal_datagrams_to_one_address() -> None:
    pending = [(bytes(100), ADDRESSES[0])] * 3 + [
        (bytes(40), ADDRESSES[0]),
        (bytes(100), ADDRESSES[1]),
    ]
    assert gso_runs(pending) == [(0, 4), (4, 5)]


def test_gro_segment_size_reads_the_cmsg() -> None:
    cmsg = (dataplane.SOL_UDP, dataplane.UDP_GRO, struct.pack("=i", 1360))
    assert gro_segment_size([cmsg]) == 1360
    assert gro_segment_size([(socket.SOL_SOCKET, 1, b"\x00\x00\x00\x00")]) == 0
    assert gro_segment_size([]) == 0


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind(("127.0.0.1", 0))
        receiver.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        receiver.setblocking(False)
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


def drain(plane: DataPlane, sock: socket.socket, expected: int) -> list[bytes]:
    """Datagrams through `plane.drain_socket`, waiting (bounded) until `expected` arrived."""
    got: list[bytes] = []
    for _ in range(50):
        if len(got) >= expected:
            break
        select.select([sock], [], [], 0.1)
        plane.drain_socket(lambda data, addr: got.append(data))
    return got


@pytest.mark.parametrize("gro", [True, False])
def test_a_batch_leaves_in_gso_sends_and_arrives_as_the_same_datagrams(
    sockets: tuple[socket.socket, socket.socket], gro: bool
) -> None:
    sender, receiver = sockets
    target = receiver.getsockname()
    datagrams = [os.urandom(1360) for _ in range(40)] + [os.urandom(300), os.urandom(1000)]
    outgoing = DataPlane(sender)
    incoming = DataPlane(receiver, gro=gro)
    outgoing._batching = True  # what a drain does while the node handles its reads
    for datagram in datagrams:
        outgoing.send_datagram(datagram, target)
    outgoing._batching = False
    outgoing.flush()
    assert outgoing.send_errors == 0
    assert drain(incoming, receiver, len(datagrams)) == datagrams


def test_outside_a_drain_a_datagram_leaves_at_once(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = sockets
    plane = DataPlane(sender)
    plane.send_datagram(b"keepalive", receiver.getsockname())
    select.select([receiver], [], [], 2.0)
    assert receiver.recvfrom(100)[0] == b"keepalive"


def test_tun_writes_queue_during_a_drain_and_pass_through_without_vnet() -> None:
    read_end, write_end = os.pipe()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        plane = DataPlane(sock)
        plane.attach_tun(write_end, vnet=False)
        plane._batching = True
        plane.write_tun(b"\x45first")
        assert not select.select([read_end], [], [], 0)[0]  # queued, not written yet
        plane._batching = False
        plane.flush()
        assert os.read(read_end, 100) == b"\x45first"
    finally:
        sock.close()
        os.close(read_end)
        os.close(write_end)


def test_with_syscall_threads_a_batch_arrives_in_order_and_close_joins(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = sockets
    target = receiver.getsockname()
    datagrams = [bytes([index]) * 1200 for index in range(30)]
    outgoing = DataPlane(sender, threads=True)
    incoming = DataPlane(receiver)
    try:
        for round_ in range(3):  # more than INLINE_CALLS runs: the thread sends them
            outgoing._batching = True
            for datagram in datagrams[round_ * 10 : round_ * 10 + 10]:
                outgoing.send_datagram(datagram, target)
                outgoing.send_datagram(b"x", target)  # breaks GSO runs: many calls
            outgoing._batching = False
            outgoing.flush()
        got = drain(incoming, receiver, 60)
    finally:
        outgoing.close()
    assert [d for d in got if d != b"x"] == datagrams
    assert outgoing.send_errors == 0
    assert not any(worker._thread.is_alive() for worker in outgoing._all_workers)
