"""A WireGuard-compatible tunnel: one UDP socket, one TUN, one SessionManager.

    python -m gossipmesh.runtime.wg_bridge --config FILE

Statically configured peers (public key, endpoint, allowed IPs), as a stock
`wg` interface has. It is what the interop test runs against wireguard-go,
and the shape the daemon's data plane builds on: `loop.add_reader` on both
fds, each drained until EAGAIN (bounded per wake-up), per packet one dict
look-up, one AEAD call and one syscall, no logging, no coroutine.

Events (handshakes, roaming) are printed as JSON lines on stdout, so a test
can wait for them; SIGUSR1 prints the counters, SIGTERM/SIGINT stop cleanly.

Config (TOML):

    private_key = "BASE64"          # X25519, as `wg genkey` prints; or key_file = PATH
    listen_port = 51820
    listen_address = "0.0.0.0"      # "::" for a dual-stack socket
    interface = "gmb0"
    mtu = 1420
    addresses = ["10.0.0.2/24", "fd00::2/64"]
    timer_scale = 1.0               # divides protocol timers; tests raise it
    preshared_key = "BASE64"        # optional, default all zeros

    [[peer]]
    public_key = "BASE64"
    endpoint = "192.0.2.1:51820"    # optional
    allowed_ips = ["10.0.0.1/32", "fd00::1/128"]
    persistent_keepalive = 25       # optional, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import ipaddress
import json
import os
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gossipmesh.identity import load_key_file
from gossipmesh.runtime.tun import Interface, Network, open_tun
from gossipmesh.session.events import EndpointChanged, HandshakeAbandoned, HandshakeCompleted
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.peer import Peer

MAX_BATCH = 512
"""Packets handled per wake-up before yielding to the loop (the other fd, timers)."""
MAX_ROUTE_CACHE = 65536


class BridgeConfigError(ValueError):
    """The bridge's config file is invalid; the message names the key."""


@dataclass(frozen=True)
class PeerConfig:
    public_key: bytes
    endpoint: tuple[str, int] | None
    allowed_ips: tuple[Network, ...]
    persistent_keepalive: float | None


@dataclass(frozen=True)
class BridgeConfig:
    private_key: bytes
    listen_port: int
    listen_address: str
    interface: str
    mtu: int
    addresses: tuple[Interface, ...]
    timer_scale: float
    preshared_key: bytes
    peers: tuple[PeerConfig, ...]


def _key(value: Any, name: str) -> bytes:
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise BridgeConfigError(f"{name}: not base64") from None
    if len(raw) != 32:
        raise BridgeConfigError(f"{name}: a key is 32 bytes, got {len(raw)}")
    return raw


def _endpoint(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise BridgeConfigError(f"endpoint {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def load_config(path: Path) -> BridgeConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BridgeConfigError(f"{path}: {exc}") from None
    if "key_file" in data:
        private_key = load_key_file(data["key_file"]).x25519_private_key
    else:
        private_key = _key(data.get("private_key"), "private_key")
    peers = []
    for number, entry in enumerate(data.get("peer", [])):
        endpoint = entry.get("endpoint")
        peers.append(
            PeerConfig(
                public_key=_key(entry.get("public_key"), f"peer[{number}].public_key"),
                endpoint=_endpoint(endpoint) if endpoint else None,
                allowed_ips=tuple(
                    ipaddress.ip_network(item, strict=False)
                    for item in entry.get("allowed_ips", [])
                ),
                persistent_keepalive=entry.get("persistent_keepalive"),
            )
        )
    psk = data.get("preshared_key")
    return BridgeConfig(
        private_key=private_key,
        listen_port=int(data.get("listen_port", 51820)),
        listen_address=str(data.get("listen_address", "0.0.0.0")),
        interface=str(data.get("interface", "gmb0")),
        mtu=int(data.get("mtu", 1420)),
        addresses=tuple(ipaddress.ip_interface(item) for item in data.get("addresses", [])),
        timer_scale=float(data.get("timer_scale", 1.0)),
        preshared_key=_key(psk, "preshared_key") if psk else bytes(32),
        peers=tuple(peers),
    )


class AllowedIPs:
    """Cryptokey routing: address -> peer by longest prefix, cached per address.

    The cache makes the per-packet cost one dict look-up on the raw address
    bytes; the prefix scan runs once per new address.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[Network, Peer]] = []
        self._cache: dict[bytes, Peer | None] = {}

    def add(self, network: Network, peer: Peer) -> None:
        self._routes.append((network, peer))
        self._routes.sort(key=lambda item: item[0].prefixlen, reverse=True)
        self._cache.clear()

    def lookup(self, address: bytes) -> Peer | None:
        try:
            return self._cache[address]
        except KeyError:
            pass
        found = None
        if len(address) in (4, 16):  # a truncated packet gives a short slice
            ip = ipaddress.ip_address(address)
            for network, peer in self._routes:
                if ip.version == network.version and ip in network:
                    found = peer
                    break
        if len(self._cache) >= MAX_ROUTE_CACHE:
            self._cache.clear()
        self._cache[address] = found
        return found


@dataclass
class BridgeStats:
    tun_packets: int = 0
    no_route: int = 0
    source_rejected: int = 0
    send_errors: int = 0
    tun_write_errors: int = 0
    control_payloads: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class PacketDevice(Protocol):
    """What the bridge needs of a TUN device: a non-blocking fd, one IP packet per read."""

    @property
    def fd(self) -> int: ...


class Bridge:
    """Moves packets between the TUN fd and the UDP socket through the session manager."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        manager: SessionManager,
        tun: PacketDevice,
        sock: socket.socket,
        routes: AllowedIPs,
    ) -> None:
        self.loop = loop
        self.manager = manager
        self.tun = tun
        self.sock = sock
        self.routes = routes
        self.stats = BridgeStats()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None

    def start(self) -> None:
        self.loop.add_reader(self.tun.fd, self.on_tun_readable)
        self.loop.add_reader(self.sock.fileno(), self.on_socket_readable)
        self._after_batch(self.loop.time())

    def stop(self) -> None:
        self.loop.remove_reader(self.tun.fd)
        self.loop.remove_reader(self.sock.fileno())
        if self._timer is not None:
            self._timer.cancel()

    def on_tun_readable(self) -> None:
        now = self.loop.time()
        read = os.read
        fd = self.tun.fd
        lookup = self.routes.lookup
        encrypt_for = self.manager.encrypt_for
        sendto: Any = self.sock.sendto  # endpoints are opaque Hashable to the core
        stats = self.stats
        for _ in range(MAX_BATCH):
            try:
                packet = read(fd, 65536)
            except BlockingIOError:
                break
            stats.tun_packets += 1
            version = packet[0] >> 4 if packet else 0
            if version == 4:
                peer = lookup(packet[16:20])
            elif version == 6:
                peer = lookup(packet[24:40])
            else:
                peer = None
            if peer is None:
                stats.no_route += 1
                continue
            datagram = encrypt_for(peer, packet, now)
            if datagram is None:
                continue  # staged; the handshake it started goes out after the batch
            try:
                sendto(datagram, peer.endpoint)
            except OSError:
                stats.send_errors += 1
        self._after_batch(now)

    def on_socket_readable(self) -> None:
        now = self.loop.time()
        recvfrom = self.sock.recvfrom
        manager = self.manager
        open_transport = manager.open_transport
        lookup = self.routes.lookup
        write = os.write
        fd = self.tun.fd
        stats = self.stats
        for _ in range(MAX_BATCH):
            try:
                data, addr = recvfrom(65536)
            except BlockingIOError:
                break
            except OSError:
                continue  # e.g. ICMP port unreachable reported on the socket
            if data[:1] != b"\x04":
                manager.receive_datagram(data, addr, now)
                continue
            opened = open_transport(data, addr, now)
            if opened is None:
                continue
            peer, payload = opened
            if not payload:
                continue  # keepalive
            version = payload[0] >> 4
            if version == 4:
                source = lookup(payload[12:16])
            elif version == 6:
                source = lookup(payload[8:24])
            else:
                stats.control_payloads += 1
                continue
            if source is not peer:
                stats.source_rejected += 1
                continue
            try:
                write(fd, payload)
            except OSError:
                stats.tun_write_errors += 1
        self._after_batch(now)

    def _after_batch(self, now: float) -> None:
        """Send what the manager queued, report events, re-arm the one timer.

        Once per batch, not per packet: packets move timer deadlines too
        (keepalive due, handshake due), so the timer is re-checked every time.
        """
        manager = self.manager
        if manager.has_output:
            sendto: Any = self.sock.sendto
            for datagram, addr in manager.datagrams_to_send(now):
                try:
                    sendto(datagram, addr)
                except (OSError, TypeError):
                    self.stats.send_errors += 1
            while (event := manager.next_event()) is not None:
                report_event(event)
        when = manager.get_timer()
        if when != self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = when
            self._timer = None if when is None else self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_when
        self._timer = None
        self._timer_when = None
        now = self.loop.time()
        if due is not None and now < due:
            now = due  # asyncio may fire a hair early
        self.manager.handle_timer(now)
        self._after_batch(now)


def report(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def report_event(event: object) -> None:
    if isinstance(event, HandshakeCompleted):
        report(
            {
                "event": "handshake",
                "peer": base64.b64encode(event.peer).decode(),
                "initiator": event.initiator,
                "index": event.local_index,
            }
        )
    elif isinstance(event, HandshakeAbandoned):
        report({"event": "handshake_abandoned", "peer": base64.b64encode(event.peer).decode()})
    elif isinstance(event, EndpointChanged):
        report(
            {
                "event": "endpoint",
                "peer": base64.b64encode(event.peer).decode(),
                "endpoint": repr(event.endpoint),
            }
        )


def _socket_address(sock: socket.socket, endpoint: tuple[str, int]) -> Hashable:
    """The form recvfrom reports for this endpoint, so roaming compares like with like."""
    host, port = endpoint
    if sock.family == socket.AF_INET6:
        ip = ipaddress.ip_address(host)
        if ip.version == 4:
            return (f"::ffff:{ip}", port, 0, 0)
        return (str(ip), port, 0, 0)
    return (str(ipaddress.ip_address(host)), port)


def open_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def run(config: BridgeConfig) -> BridgeStats:
    loop = asyncio.get_running_loop()
    manager = SessionManager(
        config.private_key,
        preshared_key=config.preshared_key,
        timer_scale=config.timer_scale,
        wall_clock_offset=time.time() - loop.time(),
        mtu=config.mtu,
    )
    routes = AllowedIPs()
    sock = open_socket(config.listen_address, config.listen_port)
    networks = [network for peer in config.peers for network in peer.allowed_ips]
    try:
        # pyroute2's synchronous API runs an event loop of its own: not in this thread.
        tun = await asyncio.to_thread(
            open_tun, config.interface, config.mtu, config.addresses, networks
        )
        with tun:
            now = loop.time()
            for entry in config.peers:
                peer = manager.add_peer(
                    entry.public_key,
                    now,
                    endpoint=_socket_address(sock, entry.endpoint) if entry.endpoint else None,
                    persistent_keepalive=entry.persistent_keepalive,
                )
                for network in entry.allowed_ips:
                    routes.add(network, peer)
            bridge = Bridge(loop, manager, tun, sock, routes)
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            loop.add_signal_handler(signal.SIGUSR1, lambda: _report_stats(manager, bridge))
            bridge.start()
            report(
                {
                    "event": "ready",
                    "interface": tun.name,
                    "public_key": base64.b64encode(manager.static_public).decode(),
                    "port": sock.getsockname()[1],
                }
            )
            try:
                await stop.wait()
            finally:
                bridge.stop()
                _report_stats(manager, bridge)
            return bridge.stats
    finally:
        sock.close()


def _report_stats(manager: SessionManager, bridge: Bridge) -> None:
    report({"event": "stats", "session": manager.stats.as_dict(), "bridge": asdict(bridge.stats)})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gossipmesh.runtime.wg_bridge")
    parser.add_argument("--config", type=Path, required=True)
    arguments = parser.parse_args(argv)
    try:
        config = load_config(arguments.config)
        asyncio.run(run(config))
    except (BridgeConfigError, OSError) as exc:
        print(f"wg_bridge: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
