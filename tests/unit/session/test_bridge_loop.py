"""Two bridges on loopback UDP, with socketpairs standing in for the TUN fds.

The fake is only the device edge (a SOCK_DGRAM socketpair keeps one packet per
read, as a TUN does); the loop, the readers, the session manager and the timer
re-arming are the real ones. Needs no root.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

from gossipmesh.runtime.wg_bridge import AllowedIPs, Bridge, open_socket
from gossipmesh.session.manager import SessionManager
from tests.unit.session.pair import IPV4_PACKET, make_manager

TIMER_SCALE = 50.0  # keepalive after 0.2 s


class FakeTun:
    def __init__(self) -> None:
        self.inside, self.outside = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.inside.setblocking(False)
        self.outside.setblocking(False)

    @property
    def fd(self) -> int:
        return self.inside.fileno()

    def close(self) -> None:
        self.inside.close()
        self.outside.close()


async def _scenario() -> tuple[SessionManager, SessionManager, bytes]:
    loop = asyncio.get_running_loop()
    a, b = make_manager(1, timer_scale=TIMER_SCALE), make_manager(2, timer_scale=TIMER_SCALE)
    sock_a, sock_b = open_socket("127.0.0.1", 0), open_socket("127.0.0.1", 0)
    tun_a, tun_b = FakeTun(), FakeTun()
    bridges = []
    try:
        for me, other, sock, other_sock, tun, route in (
            (a, b, sock_a, sock_b, tun_a, "192.168.0.2"),
            (b, a, sock_b, sock_a, tun_b, "192.168.0.1"),
        ):
            peer = me.add_peer(other.static_public, loop.time(), endpoint=other_sock.getsockname())
            routes = AllowedIPs()
            routes.add(ipaddress.ip_network(f"{route}/32"), peer)
            bridge = Bridge(loop, me, tun, sock, routes)
            bridge.start()
            bridges.append(bridge)

        tun_a.outside.send(IPV4_PACKET)  # 192.168.0.1 -> 192.168.0.2, into A's "TUN"
        received = await _receive(tun_b.outside, timeout=5.0)
        # B never answers with data, so KEEPALIVE_TIMEOUT / 50 after each packet it
        # must send a keepalive. The second one follows a packet that changes no
        # state but the timer, so it shows the bridge re-arms its timer per batch.
        await _wait_for(lambda: b.stats.keepalives_sent >= 1, timeout=5.0)
        tun_a.outside.send(IPV4_PACKET)
        assert await _receive(tun_b.outside, timeout=5.0) == IPV4_PACKET
        await _wait_for(lambda: b.stats.keepalives_sent >= 2, timeout=2.0)
        return a, b, received
    finally:
        for bridge in bridges:
            bridge.stop()
        for thing in (sock_a, sock_b, tun_a, tun_b):
            thing.close()


async def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.01)


async def _receive(sock: socket.socket, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)


def test_bridges_carry_a_packet_and_keep_alive() -> None:
    a, b, received = asyncio.run(_scenario())
    assert received == IPV4_PACKET
    assert a.stats.handshakes_completed == 1 and b.stats.handshakes_completed == 1
    assert b.stats.keepalives_sent >= 2
    assert a.stats.keepalives_received >= 1
    assert not a.stats.refusals() and not b.stats.refusals()
