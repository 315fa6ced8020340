"""The transport handed to the kademlia protocol: seal, count, and send through the runtime.

`kademlia.Server.listen()` opens a UDP socket of its own; a node has one port
for everything, owned by the runtime (or by the simulator's network). So the
protocol gets this object as its `transport` (`connection_made`), and every
rpcudp datagram it sends is sealed and passed to the injected `send` callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gossipmesh.discovery.seal import DatagramSeal
from gossipmesh.discovery.stats import DiscoveryStats

Address = tuple[str, int]
SendDatagram = Callable[[bytes, Address], None]

log = logging.getLogger(__name__)


class SealedTransport:
    """Looks enough like an asyncio DatagramTransport for rpcudp (`sendto`, `close`)."""

    def __init__(self, seal: DatagramSeal, send: SendDatagram, stats: DiscoveryStats) -> None:
        self._seal = seal
        self._send = send
        self._stats = stats
        self._closed = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self._closed or addr is None:
            return
        datagram = self._seal.seal(data)
        try:
            self._send(datagram, (addr[0], addr[1]))
        except OSError as exc:
            # The runtime's socket can fail (unreachable, buffer full): a lost
            # datagram, which rpcudp's timeout already handles.
            self._stats.send_errors += 1
            log.debug("DHT send to %s failed: %s", addr, exc)
            return
        self._stats.datagrams_sent += 1
        self._stats.bytes_sent += len(datagram)

    def close(self) -> None:
        self._closed = True

    def is_closing(self) -> bool:
        return self._closed
