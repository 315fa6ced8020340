"""Everything the node core's parts produce, waiting for the driver to pull it.

One object shared by the parts, so that each can emit without knowing the
others: datagrams for the UDP socket, packets and frames for the TUN, events, and
requests for the driver. `dirty` tells the driver that the core's timer or
its events may have changed; the packet fast path leaves it alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from gossipmesh.node.events import NodeEvent, NodeRequest


class Outbox:
    """Pending output of one node core."""

    __slots__ = ("datagrams", "dirty", "events", "requests", "tun_frames", "tun_writes")

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self.tun_writes: list[bytes] = []
        """IP packets for the TUN."""
        self.tun_frames: list[memoryview] = []
        """Whole TUN frames (virtio_net_hdr first) off stream links, written as they are."""
        self.events: deque[NodeEvent] = deque()
        self.requests: deque[NodeRequest] = deque()
        self.dirty = False

    def send(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.append((datagram, addr))

    def write_tun(self, packet: bytes) -> None:
        self.tun_writes.append(packet)

    def event(self, event: NodeEvent) -> None:
        self.events.append(event)
        self.dirty = True

    def request(self, request: NodeRequest) -> None:
        self.requests.append(request)
        self.dirty = True


class PulledOutput:
    """The pull side of a core's `Outbox` (h11-style): the driver takes what is pending."""

    outbox: Outbox

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        out, self.outbox.datagrams = self.outbox.datagrams, []
        return out

    def tun_packets_to_write(self) -> list[bytes]:
        """IP packets for the TUN device (delivered to this host)."""
        out, self.outbox.tun_writes = self.outbox.tun_writes, []
        return out

    def tun_frames_to_write(self) -> list[memoryview]:
        """Whole TUN frames off stream links (virtio_net_hdr first), written as they are."""
        out, self.outbox.tun_frames = self.outbox.tun_frames, []
        return out

    def next_event(self) -> NodeEvent | None:
        events = self.outbox.events
        return events.popleft() if events else None

    def next_request(self) -> NodeRequest | None:
        requests = self.outbox.requests
        return requests.popleft() if requests else None


def is_udp_address(endpoint: Hashable) -> bool:
    """A session endpoint that is a UDP address (not a relay marker)."""
    return type(endpoint) is tuple
