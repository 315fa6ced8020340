"""The daemon's data plane: the UDP socket and the TUN fd, moved in batches.

Per packet the node does one dict look-up and one AEAD call; this module
makes the syscalls per *batch*:

- UDP: datagrams the node sends while a drain runs are queued and leave in
  one `sendmsg` per run of equal-sized datagrams to one address (UDP GSO,
  `UDP_SEGMENT`); reads use `UDP_GRO`, so one `recvmsg` returns many
  datagrams and a cmsg says where to cut them.
- TUN: with IFF_VNET_HDR and TSO offloads (`gossipmesh.runtime.vnet`), one
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
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Final

import pytun

from gossipmesh.runtime.tun import Interface, Network, TunDevice, TunError
from gossipmesh.runtime.vnet import (
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
FLUSH_PACKETS: Final = 64
"""Queued packets that trigger a flush in the middle of a drain."""

TUNSETOFFLOAD: Final = 0x400454D0
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08
TUN_READ_SIZE: Final = 65535 + VNET_HDR_SIZE

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

    def __init__(self, sock: socket.socket, *, gso: bool = True, gro: bool = True) -> None:
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
        self.send_errors = 0
        self.tun_write_errors = 0
        self.offload_errors = 0

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
            self.send_errors += 1

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
            self.tun_write_errors += 1

    # --- draining ----------------------------------------------------------------------

    def drain_socket(self, received: Callable[[bytes, Address], None]) -> None:
        """Read datagrams until the socket would block (bounded), then flush what they caused."""
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
                    for offset in range(0, len(data), size):
                        received(data[offset : offset + size], addr)
                else:
                    received(data, addr)
                if len(self._tun_pending) >= FLUSH_PACKETS:
                    self._flush_tun()
        finally:
            self._batching = False
            self.flush()

    def drain_tun(self, packet_in: Callable[[bytes], None]) -> None:
        """Read the TUN until it would block (bounded), then flush what the packets caused."""
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
                    try:
                        packets = packets_from_tun(frame)
                    except OffloadError:
                        self.offload_errors += 1
                        continue
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

    def _flush_udp(self) -> None:
        pending = self._udp_pending
        sendto = self._sendto
        try:
            if not self._gso:
                for data, addr in pending:
                    try:
                        sendto(data, addr)
                    except OSError:
                        self.send_errors += 1
                return
            for start, end in gso_runs(pending):
                data, addr = pending[start]
                try:
                    if end - start == 1:
                        sendto(data, addr)
                    else:
                        self._sendmsg(
                            [item[0] for item in pending[start:end]],
                            [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(data)))],
                            0,
                            addr,
                        )
                except OSError as exc:
                    if exc.errno in (errno.EINVAL, errno.EIO, errno.EOPNOTSUPP):
                        self._gso = False  # no GSO on this path: one datagram per call from now on
                        for item in pending[start:end]:
                            self._send_one(item)
                    else:
                        self.send_errors += end - start
        finally:
            pending.clear()

    def _send_one(self, item: tuple[bytes, Address]) -> None:
        try:
            self._sendto(item[0], item[1])
        except OSError:
            self.send_errors += 1

    def _flush_tun(self) -> None:
        pending = self._tun_pending
        fd = self._tun_fd
        try:
            if self._vnet:
                writev = os.writev
                for buffers in coalesce(pending):
                    try:
                        writev(fd, buffers)
                    except OSError:
                        self.tun_write_errors += 1
            else:
                write = os.write
                for packet in pending:
                    try:
                        write(fd, packet)
                    except OSError:
                        self.tun_write_errors += 1
        finally:
            pending.clear()
