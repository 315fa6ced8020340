"""The node's side of stream links, with real nodes over loopback UDP.

Negotiation runs through the real WireGuard sessions; only the TCP side is
faked (a connector that records what it was told to connect to, and senders
that record what was queued on them), so these tests pin the node's rules:
which frames take a link, what a link may deliver, and when a node gives up
a link because its peer went back to UDP.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gossipmesh.links.frames import ITEM_HEADER
from gossipmesh.links.planner import ConnectOrder
from gossipmesh.runtime.node_runner import NodeRunner as Node
from gossipmesh.vnet import GSO_TCPV4, GSO_UDP, NEEDS_CSUM, VNET_HDR
from tests.support.loopback_mesh import LoopbackMesh, echo_request, wait_for

pytestmark = pytest.mark.timeout(120)

LINK_PORT = 40000


@dataclass
class FakeConnector:
    orders: list[tuple[ConnectOrder, str]] = field(default_factory=list)

    def connect_link(self, order: ConnectOrder, host: str) -> None:
        self.orders.append((order, host))


@dataclass
class FakeSender:
    queued: list[bytes] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    def queue(self, tun_frame: bytes) -> None:
        self.queued.append(tun_frame)

    def abandon(self, reason: str) -> None:
        self.abandoned.append(reason)


@dataclass
class Side:
    node: Node
    connector: FakeConnector
    written: list[bytes]


def enable(node: Node) -> Side:
    connector, written = FakeConnector(), []
    node.enable_links(
        LINK_PORT,
        lambda request: connector.connect_link(request.order, request.host),
        lambda frame: written.append(bytes(frame)),
    )
    return Side(node, connector, written)


def tcp_frame(source: bytes, destination: bytes, payload: int, *, gso: int = GSO_TCPV4) -> bytes:
    """A TUN frame holding an IPv4 TCP super-packet (as a TSO read hands it over)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 1, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + payload, 1, 0x4000, 64, 6, 0, source, destination
    )
    header = VNET_HDR.pack(NEEDS_CSUM, gso, 40, 1288, 20, 16)
    return header + ip + tcp + bytes(payload)


def plaintext(*frames: bytes) -> bytes:
    return b"".join(ITEM_HEADER.pack(len(frame) - 10) + frame for frame in frames)


def _sent_and_arrived(mesh: LoopbackMesh, source: Node, packet: bytes, target: int) -> bool:
    source.tun_packet(packet)
    return packet in mesh.transports[target].delivered


async def three_nodes(tmp_path: Path) -> LoopbackMesh:
    mesh = LoopbackMesh(3, tmp_path)
    await mesh.open()
    await mesh.start_all(lambda i: [] if i == 0 else [0])
    for source in range(3):
        for target in range(3):
            if source != target:
                a, b = mesh.nodes[source], mesh.nodes[target]
                assert a.ipv4 is not None and b.ipv4 is not None
                packet = echo_request(a.ipv4, b.ipv4, source * 10 + target)
                await wait_for(
                    lambda a=a, p=packet, t=target: _sent_and_arrived(mesh, a, p, t),  # type: ignore[misc]
                    30,
                    f"node{source} to reach node{target}",
                )
    return mesh


def key(node: Node) -> bytes:
    """The node's session key: what the other nodes know it by."""
    return node.identity.x25519_public_key


def test_bulk_frame_offers_once_and_the_peer_accepts_with_its_port(tmp_path: Path) -> None:
    async def scenario() -> None:
        mesh = await three_nodes(tmp_path)
        try:
            a, b = enable(mesh.nodes[0]), enable(mesh.nodes[1])
            assert a.node.ipv4 is not None and b.node.ipv4 is not None
            small = tcp_frame(a.node.ipv4.packed, b.node.ipv4.packed, 100, gso=0)
            assert a.node.tun_frame(small) is False  # not bulk: no offer
            assert a.node.links.counters.offers_sent == 0
            bulk = tcp_frame(a.node.ipv4.packed, b.node.ipv4.packed, 20000)
            assert a.node.tun_frame(bulk) is False  # no link yet: UDP carries it
            assert a.node.tun_frame(bulk) is False
            assert a.node.links.counters.offers_sent == 1  # one offer, however many frames
            await wait_for(lambda: bool(a.connector.orders), 10, "the peer's LINK_ACCEPT")
            order, host = a.connector.orders[0]
            assert order.port == LINK_PORT and host == "127.0.0.1"
            assert order.peer_key == key(b.node)
            claimed = b.node.claim(order.token)
            assert claimed is not None and claimed.peer_key == key(a.node)
            assert claimed.receive_key == order.send_key and claimed.send_key == order.receive_key
            assert b.node.claim(order.token) is None  # a token works once
        finally:
            await mesh.close()

    asyncio.run(scenario())


def test_frames_take_the_link_and_only_allowed_frames_come_off_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        mesh = await three_nodes(tmp_path)
        try:
            a, b = enable(mesh.nodes[0]), enable(mesh.nodes[1])
            c = mesh.nodes[2]
            assert a.node.ipv4 and b.node.ipv4 and c.ipv4
            sender = FakeSender()
            a.node.up(key(b.node), sender)
            frame = tcp_frame(a.node.ipv4.packed, b.node.ipv4.packed, 20000)
            assert a.node.tun_frame(frame) is True
            assert sender.queued == [frame]
            to_c = tcp_frame(a.node.ipv4.packed, c.ipv4.packed, 20000)
            assert a.node.tun_frame(to_c) is False  # no link to c: UDP

            links = b.node.links
            good = tcp_frame(a.node.ipv4.packed, b.node.ipv4.packed, 3000)
            b.node.received(key(a.node), plaintext(good))
            assert b.written == [good] and links.counters.frames_received == 1

            forged = tcp_frame(c.ipv4.packed, b.node.ipv4.packed, 3000)  # c's address, from a
            elsewhere = tcp_frame(a.node.ipv4.packed, c.ipv4.packed, 3000)  # not for b
            bad_offload = tcp_frame(a.node.ipv4.packed, b.node.ipv4.packed, 3000, gso=GSO_UDP)
            before = b.node.counters.source_rejected, b.node.counters.destination_rejected
            b.node.received(key(a.node), plaintext(forged, elsewhere, bad_offload, good))
            assert b.written == [good, good]  # only the good one, after the bad ones
            assert links.counters.frames_rejected == 3
            assert b.node.counters.source_rejected == before[0] + 1
            assert b.node.counters.destination_rejected == before[1] + 1

            stranger = bytes(32)  # not a node this one knows
            b.node.received(stranger, plaintext(good))
            assert b.written == [good, good] and links.counters.frames_rejected == 4
        finally:
            await mesh.close()

    asyncio.run(scenario())


def test_a_linked_peer_sending_over_udp_ends_the_link(tmp_path: Path) -> None:
    async def scenario() -> None:
        mesh = await three_nodes(tmp_path)
        try:
            a, b = mesh.nodes[0], enable(mesh.nodes[1])
            assert a.ipv4 is not None and b.node.ipv4 is not None
            sender = FakeSender()
            b.node.up(key(a), sender)
            a.tun_packet(echo_request(a.ipv4, b.node.ipv4, 7))  # a has no link: UDP
            assert sender.abandoned == []  # within the settle time: packets in flight
            ping = echo_request(a.ipv4, b.node.ipv4, 8)

            def given_up() -> bool:
                a.tun_packet(ping)  # a keeps sending over UDP
                return bool(sender.abandoned)

            await wait_for(given_up, 10, "b to give up the link once a's packets come over UDP")
            assert b.node.links.counters.links_abandoned == 1
        finally:
            await mesh.close()

    asyncio.run(scenario())
