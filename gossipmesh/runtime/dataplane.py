"""The daemon's data plane: the UDP socket and the TUN fd, moved in batches.

Per packet the node does one dict look-up and one AEAD call; this module
makes the syscalls per *batch*:

- UDP: datagrams the node sends while a drain runs are queued and leave in
  one `sendmsg` per run of equal-sized datagrams to one address (UDP GSO,
  `UDP_SEGMENT`); reads use `UDP_GRO`, so one `recvmsg` returns many
  datagrams and a cmsg says where to cut them.
- TUN: with IFF_VNET_HDR and TSO offloads (`gossipmesh.vnet`), one
  read returns a TCP super-packet that is segmented here, and the TCP
  segments the sessions deliver are coalesced back into super-packets, one
  `writev` each.

Nothing changes on the wire: GSO and GRO only batch syscalls, and every
datagram is one WireGuard transport message carrying one IP packet of at
most the TUN MTU, so stock WireGuard peers interoperate and one lost
datagram costs one TCP segment. Outside a drain (timers, control messages)
every send goes out at once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

import pytun

from gossipmesh.runtime.tun import Interface, Network, TunDevice, TunError
from gossipmesh.vnet import (
    PLAIN_HEADER,
    VNET_HDR_SIZE,
    OffloadError,
    coalesce,
    packets_from_tun,
)

MAX_BATCH: Final = 512
"""Reads per wake-up before yielding to other work."""
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
UDP_GRO: Final = 104
GSO_MAX_SEGMENTS: Final = 64
GSO_MAX_BYTES: Final = 65000
"""A GSO send stays below IPv4's 65,507-byte UDP payload limit."""
RECEIVE_BUFFER: Final = 65535
GRO_CMSG_SPACE: Final = socket.CMSG_SPACE(4)
INLINE_CALLS: Final = 2
"""Batches of at most this many syscalls are made on the loop thread (latency)."""
WORKER_QUEUE: Final = 64
"""Batches a syscall thread may fall behind before the loop waits for it."""
FLUSH_PACKETS: Final = 64
"""Queued packets that trigger a flush in the middle of a drain."""

TUNSETOFFLOAD: Final = 0x400454D0
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08
TUN_READ_SIZE: Final = 65535 + VNET_HDR_SIZE

UDP_THREAD: Final = "gossipmesh-udp"
TUN_THREAD: Final = "gossipmesh-tun"

Address = tuple[str, int]


def gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size a UDP_GRO `recvmsg` reported, or 0 when it coalesced nothing."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
            return int.from_bytes(data[:4] if len(data) >= 4 else data[:2], "little")
    return 0


def gso_runs(pending: list[tuple[bytes, Address]]) -> list[tuple[int, int]]:
    """Split queued datagrams into (start, end) runs that one GSO send can carry.

    A run goes to one address; all its datagrams have the first one's size
    except the last, which may be shorter (the kernel cuts at the first's size).
    """
    runs: list[tuple[int, int]] = []
    count = len(pending)
    start = 0
    while start < count:
        data, address = pending[start]
        size = len(data)
        total = size
        end = start + 1
        while end < count and end - start < GSO_MAX_SEGMENTS:
            candidate, candidate_address = pending[end]
            length = len(candidate)
            if length > size or length == 0 or total + length > GSO_MAX_BYTES:
                break
            if candidate_address != address:
                break
            end += 1
            total += length
            if length < size:
                break
        runs.append((start, end))
        start = end
    return runs


class OffloadTunDevice(TunDevice):
    """A TUN device opened with IFF_VNET_HDR and TCP segmentation offloads on."""

    def __init__(self, name: str, mtu: int) -> None:
        try:
            self._device = pytun.TunTapDevice(
                name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI | pytun.IFF_VNET_HDR
            )
        except (pytun.Error, OSError) as exc:
            raise TunError(f"cannot open TUN device {name!r}: {exc}") from exc
        self.name = self._device.name
        self.fd = self._device.fileno()
        self.mtu = mtu
        self._closed = False
        try:
            fcntl.ioctl(
                self.fd,
                TUNSETOFFLOAD,
                TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
            )
        except OSError as exc:
            self._device.close()
            raise TunError(f"cannot enable offloads on {name!r}: {exc}") from exc
        os.set_blocking(self.fd, False)


def open_offload_tun(
    name: str,
    mtu: int,
    addresses: Iterable[Interface] = (),
    routes: Iterable[Network] = (),
) -> TunDevice:
    """`open_tun` with TCP offloads; a plain TUN where the kernel refuses them."""
    try:
        device: TunDevice = OffloadTunDevice(name, mtu)
    except TunError:
        device = TunDevice(name, mtu)
    try:
        device.configure(addresses, routes)
    except BaseException:
        device.close()
        raise
    return device


def enable_udp_gro(sock: socket.socket) -> bool:
    """Ask the kernel to coalesce received datagrams; False where it cannot."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


class DataPlane:
    """The node's `NodeTransport`: queues while a drain runs, then sends and writes in batches."""

    def __init__(
        self, sock: socket.socket, *, gso: bool = True, gro: bool = True, threads: bool = False
    ) -> None:
        self._sock = sock
        self._sendto = sock.sendto
        self._sendmsg = sock.sendmsg
        self._gso = gso
        self._gro = gro and enable_udp_gro(sock)
        self._tun_fd = -1
        self._vnet = False
        self._batching = False
        self._udp_pending: list[tuple[bytes, Address]] = []
        self._tun_pending: list[bytes] = []
        self._send_errors = 0
        self._tun_write_errors = 0
        self.offload_errors = 0
        self.after_flush: Callable[[], None] | None = None
        """Called at the end of every flush (the stream links send what they queued)."""
        self._udp_worker = SyscallWorker(UDP_THREAD) if threads else None
        self._tun_worker = SyscallWorker(TUN_THREAD) if threads else None
        self._all_workers = [w for w in (self._udp_worker, self._tun_worker) if w is not None]

    def attach_tun(self, fd: int, *, vnet: bool) -> None:
        """Start writing to the TUN fd; `vnet` when it was opened with IFF_VNET_HDR."""
        self._tun_fd = fd
        self._vnet = vnet

    # --- NodeTransport ------------------------------------------------------------------

    def send_datagram(self, data: bytes, addr: Address) -> None:
        if self._batching:
            self._udp_pending.append((data, addr))
            return
        try:
            self._sendto(data, addr)
        except OSError:
            self._send_errors += 1

    def write_tun(self, packet: bytes) -> None:
        if self._batching:
            self._tun_pending.append(packet)
            return
        try:
            if self._vnet:
                os.writev(self._tun_fd, (PLAIN_HEADER, packet))
            else:
                os.write(self._tun_fd, packet)
        except OSError:
            self._tun_write_errors += 1

    def write_tun_frame(self, frame: memoryview) -> None:
        """Write one TUN frame as it is (virtio_net_hdr included): a stream link's delivery."""
        try:
            os.write(self._tun_fd, frame)
        except OSError:
            self._tun_write_errors += 1

    # --- draining ----------------------------------------------------------------------

    def drain_socket(
        self,
        received: Callable[[bytes, Address], None],
        batch_received: Callable[[list[bytes], Address], None] | None = None,
    ) -> None:
        """Read datagrams until the socket would block (bounded), then flush what they caused.

        `batch_received`, when given, takes the datagrams of one GRO read at once.
        """
        recvmsg = self._sock.recvmsg
        self._batching = True
        try:
            for _ in range(MAX_BATCH):
                try:
                    data, ancillary, _, addr = recvmsg(RECEIVE_BUFFER, GRO_CMSG_SPACE)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # ICMP errors surface here; nothing to do
                size = gro_segment_size(ancillary) if ancillary else 0
                if size and len(data) > size:
                    if batch_received is not None:
                        batch_received(
                            [data[offset : offset + size] for offset in range(0, len(data), size)],
                            addr,
                        )
                    else:
                        for offset in range(0, len(data), size):
                            received(data[offset : offset + size], addr)
                else:
                    received(data, addr)
                if len(self._tun_pending) >= FLUSH_PACKETS:
                    self._flush_tun()
        finally:
            self._batching = False
            self.flush()

    def drain_tun(
        self,
        packet_in: Callable[[bytes], None],
        segments_in: Callable[[list[bytes]], None] | None = None,
        frame_in: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Read the TUN until it would block (bounded), then flush what the packets caused.

        `segments_in`, when given, takes the segments of one super-packet at once;
        `frame_in` sees each whole frame first and returns True when it took it
        (a stream link), before any segmentation.
        """
        read = os.read
        fd = self._tun_fd
        vnet = self._vnet
        self._batching = True
        try:
            for _ in range(MAX_BATCH):
                try:
                    frame = read(fd, TUN_READ_SIZE)
                except OSError:  # BlockingIOError, or the device went away
                    break
                if not frame:
                    continue
                if vnet:
                    if frame_in is not None and frame_in(frame):
                        continue
                    try:
                        packets = packets_from_tun(frame)
                    except OffloadError:
                        self.offload_errors += 1
                        continue
                    if segments_in is not None and len(packets) > 1:
                        segments_in(packets)
                    else:
                        for packet in packets:
                            packet_in(packet)
                else:
                    packet_in(frame)
                if len(self._udp_pending) >= GSO_MAX_SEGMENTS:
                    self._flush_udp()
        finally:
            self._batching = False
            self.flush()

    def flush(self) -> None:
        """Send and write everything queued."""
        if self._udp_pending:
            self._flush_udp()
        if self._tun_pending:
            self._flush_tun()
        if self.after_flush is not None:
            self.after_flush()

    def close(self) -> None:
        """Stop the syscall threads (what they hold is written first)."""
        workers = (self._udp_worker, self._tun_worker)
        self._udp_worker = self._tun_worker = None  # from now on every call is made inline
        for worker in workers:
            if worker is not None:
                worker.close()

    @property
    def send_errors(self) -> int:
        return self._send_errors + sum(w.errors for w in self._all_workers if w.name == UDP_THREAD)

    @property
    def tun_write_errors(self) -> int:
        return self._tun_write_errors + sum(
            w.errors for w in self._all_workers if w.name == TUN_THREAD
        )

    def _flush_udp(self) -> None:
        pending = self._udp_pending
        calls: list[SyscallCall] = []
        if not self._gso:
            sendto = self._sendto
            calls = [(sendto, item) for item in pending]
        else:
            for start, end in gso_runs(pending):
                data, addr = pending[start]
                if end - start == 1:
                    calls.append((self._sendto, (data, addr)))
                else:
                    buffers = [item[0] for item in pending[start:end]]
                    calls.append((self._send_gso, (buffers, addr)))
        pending.clear()
        self._run(self._udp_worker, calls, is_udp=True)

    def _send_gso(self, buffers: list[bytes], addr: Address) -> None:
        """One GSO send; on a path without GSO, one datagram per call from now on."""
        if self._gso:
            try:
                self._sendmsg(
                    buffers, [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(buffers[0])))], 0, addr
                )
                return
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EIO, errno.EOPNOTSUPP):
                    raise
                self._gso = False
        for data in buffers:
            self._sendto(data, addr)

    def _flush_tun(self) -> None:
        pending = self._tun_pending
        fd = self._tun_fd
        calls: list[SyscallCall]
        if self._vnet:
            writev = os.writev
            calls = [(writev, (fd, buffers)) for buffers in coalesce(pending)]
        else:
            write = os.write
            calls = [(write, (fd, packet)) for packet in pending]
        pending.clear()
        self._run(self._tun_worker, calls, is_udp=False)

    def _run(self, worker: SyscallWorker | None, calls: list[SyscallCall], *, is_udp: bool) -> None:
        """Make the calls here when they are few and nothing waits before them, else in the thread.

        A lone packet (a ping, an ACK) then pays no thread hand-off, and a
        bulk batch overlaps its kernel work with the next batch's Python.
        """
        if worker is not None and (len(calls) > INLINE_CALLS or not worker.idle()):
            worker.submit(calls)
            return
        errors = 0
        for function, args in calls:
            try:
                function(*args)
            except OSError:
                errors += 1
        if is_udp:
            self._send_errors += errors
        else:
            self._tun_write_errors += errors


SyscallCall = tuple[Callable[..., object], tuple[Any, ...]]


class SyscallWorker:
    """A thread that makes queued syscalls in order; they release the GIL while the kernel works."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[list[SyscallCall] | None] = queue.Queue(maxsize=WORKER_QUEUE)
        self.errors = 0
        """Failed calls; only this thread writes it."""
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def idle(self) -> bool:
        """Nothing queued or in progress (a read of one int: safe from the loop thread)."""
        return self._queue.unfinished_tasks == 0

    def submit(self, calls: list[SyscallCall]) -> None:
        """Queue a batch; blocks (GIL released) when the thread is WORKER_QUEUE batches behind."""
        self._queue.put(calls)

    def close(self, timeout: float = 2.0) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _serve(self) -> None:
        get = self._queue.get
        done = self._queue.task_done
        while True:
            calls = get()
            if calls is None:
                done()
                return
            for function, args in calls:
                try:
                    function(*args)
                except OSError:
                    self.errors += 1
            done()
