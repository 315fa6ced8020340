"""Asyncio UDP and TCP servers: thin adapters that move bytes to and from `MeshResolver`.

UDP answers local names inside the datagram callback (no task per query) and
starts a task only for the slow paths. TCP uses RFC 1035's two-byte length
framing, accepts a bounded number of connections and closes idle ones. Both
listen on the same port, as clients retry a truncated UDP answer over TCP
on the port they used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field

from gossipmesh.dns.answer import Drop, NeedsForward, NeedsLookup, Reply, Transport
from gossipmesh.dns.resolver import MeshResolver

log = logging.getLogger(__name__)

DEFAULT_MAX_TCP_CONNECTIONS = 64
DEFAULT_TCP_IDLE_TIMEOUT = 10.0
"""Seconds a TCP connection may stay silent (RFC 7766 suggests some seconds)."""
BIND_ATTEMPTS = 20
UDP_BATCH = 64
"""Datagrams handled per event-loop turn before yielding to other work."""
UDP_RECEIVE_BUFFER = 1 << 20
MAX_DATAGRAM = 65535


class _UdpListener:
    """A non-blocking UDP socket drained on each wake-up.

    asyncio's datagram transport reads one datagram per event-loop turn;
    draining a batch per turn roughly doubled the queries per second in
    benchmarks/dns, and a reply that would block is dropped (the client
    retries, as it would after any UDP loss).
    """

    def __init__(
        self, sock: socket.socket, resolver: MeshResolver, tasks: set[asyncio.Task[None]]
    ) -> None:
        self.sock = sock
        self.resolver = resolver
        self.tasks = tasks
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.loop.add_reader(sock.fileno(), self._drain)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def _drain(self) -> None:
        for _ in range(UDP_BATCH):
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("UDP receive error: %s", exc)
                return
            self._handle(data, addr)

    def _handle(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            outcome = self.resolver.answer_now(data, Transport.UDP)
        except Exception:
            log.exception("answering a UDP query failed")
            self._send(self.resolver.servfail(data), addr)
            return
        if isinstance(outcome, Reply):
            self._send(outcome.wire, addr)
        elif not isinstance(outcome, Drop):
            task = self.loop.create_task(self._finish(outcome, data, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _finish(
        self, outcome: NeedsLookup | NeedsForward, data: bytes, addr: tuple[str | int, ...]
    ) -> None:
        try:
            wire: bytes | None = await self.resolver.finish(outcome)
        except Exception:
            log.exception("finishing a UDP query failed")
            wire = self.resolver.servfail(data)
        self._send(wire, addr)

    def _send(self, wire: bytes | None, addr: tuple[str | int, ...]) -> None:
        if wire is None or self.closed:
            return
        try:
            self.sock.sendto(wire, addr)
        except OSError as exc:  # including BlockingIOError: dropped like any UDP loss
            log.debug("UDP send to %s failed: %s", addr, exc)


def _udp_socket(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class DnsServer:
    """Running UDP and TCP listeners; `close()` stops both and their pending work."""

    resolver: MeshResolver
    host: str
    port: int
    max_tcp_connections: int = DEFAULT_MAX_TCP_CONNECTIONS
    tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT
    _udp: _UdpListener | None = None
    _tcp: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def tcp_connections(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._connections):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_tcp_connections:
            writer.close()
            return
        self._connections.add(writer)
        try:
            while True:
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
                    length = int.from_bytes(prefix, "big")
                    if length == 0:
                        break
                    data = await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                try:
                    wire = await self.resolver.resolve(data, Transport.TCP)
                except Exception:
                    log.exception("answering a TCP query failed")
                    wire = self.resolver.servfail(data)
                if wire is None:
                    break
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def serve_dns(
    resolver: MeshResolver,
    host: str,
    port: int,
    *,
    max_tcp_connections: int = DEFAULT_MAX_TCP_CONNECTIONS,
    tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT,
) -> DnsServer:
    """Listen on `host`:`port` over UDP and TCP; port 0 picks one free port for both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = DnsServer(
        resolver,
        host,
        port,
        max_tcp_connections=max_tcp_connections,
        tcp_idle_timeout=tcp_idle_timeout,
    )
    attempts = BIND_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        udp = _UdpListener(_udp_socket(host, port, family), resolver, server._tasks)
        bound_port = udp.port
        try:
            tcp = await asyncio.start_server(
                server._serve_tcp, host, bound_port, family=family, reuse_address=True
            )
        except OSError:
            udp.close()
            if attempt + 1 == attempts:
                raise
            continue
        server._udp, server._tcp, server.port = udp, tcp, bound_port
        return server
    raise OSError(f"could not bind UDP and TCP on {host}:{port}")
