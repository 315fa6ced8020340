"""`gossipmesh up`: the asyncio runtime around one node (`NodeRunner`).

This is the only place that touches the OS for the mesh: it opens the UDP
socket and the TUN device, drains both with `add_reader` until they would
block, hands every datagram and packet to the node, serves the control
socket, and on SIGINT/SIGTERM (or `gossipmesh down`) tears everything down.
Protocol decisions live in `gossipmesh.node`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gossipmesh.addressing import IPV6_PREFIX, RESOLVER_IPV4, RESOLVER_IPV6
from gossipmesh.config import Settings
from gossipmesh.dns.host import RESOLV_CONF, recover_resolv_conf
from gossipmesh.dns.local_addresses import add_resolver_addresses
from gossipmesh.dns.lookup import resolve_for_cli
from gossipmesh.dns.node_view import PeerTableView
from gossipmesh.dns.service import MagicDns, resolver_config, start_magic_dns
from gossipmesh.errors import GossipmeshError, UsageError
from gossipmesh.identity import Identity, load_or_create_key_file
from gossipmesh.node.events import NodeEvent, RoutedPrefixesChanged, RoutesChanged
from gossipmesh.node.options import MESH_MTU, NodeOptions
from gossipmesh.runtime.busypoll import install_busy_poll
from gossipmesh.runtime.control import ControlServer
from gossipmesh.runtime.dataplane import DataPlane, OffloadTunDevice, open_offload_tun
from gossipmesh.runtime.heap import keep_freed_memory
from gossipmesh.runtime.links import StreamLinks, open_link_listener
from gossipmesh.runtime.logs import configure_logging
from gossipmesh.runtime.node_runner import NodeRunner
from gossipmesh.runtime.subnets import (
    DEFAULT_IPV4,
    DEFAULT_IPV6,
    ExitRoute,
    KernelRoutes,
    Prefix,
    SubnetRouter,
)
from gossipmesh.runtime.trust_setup import Trust, load_trust
from gossipmesh.runtime.tun import TunDevice, TunError, open_tun
from gossipmesh.runtime.udp import open_udp_socket
from gossipmesh.statefiles import InstanceLock, StateDir, default_state_dir

log = logging.getLogger("gossipmesh")

OFFLOADS_ENV = "GOSSIPMESH_OFFLOADS"
"""Set to "none" (one syscall per packet), "udp" (UDP GSO/GRO only) or "all" (the default:
also TUN TCP offloads). For measuring and for kernels without them; the wire is the same."""


THREADS_ENV = "GOSSIPMESH_IO_THREADS"
"""Set to "1" to make batched syscalls on two threads (measured: no faster on 2 busy cores)."""


def offload_mode() -> str:
    mode = os.environ.get(OFFLOADS_ENV, "all")
    return mode if mode in ("none", "udp", "all") else "all"


def preflight() -> None:
    """Refuse early, with one clear line, what cannot work."""
    if os.geteuid() != 0:
        raise UsageError("gossipmesh up needs root (CAP_NET_ADMIN) to create its TUN device")
    if not os.path.exists("/dev/net/tun"):
        raise UsageError("/dev/net/tun does not exist: this kernel or container has no TUN support")


def host_endpoints(port: int) -> tuple[tuple[str, int], ...]:
    """IPv4 addresses of this host's interfaces (not loopback, not the mesh) with our port."""
    from pyroute2 import IPRoute

    found: list[tuple[str, int]] = []
    with IPRoute() as ipr:
        for message in ipr.get_addr(family=socket.AF_INET):
            address = message.get_attr("IFA_ADDRESS")
            if address is None:
                continue
            ip = ipaddress.IPv4Address(address)
            if ip.is_loopback or ip.is_link_local or ip in ipaddress.IPv4Network("100.64.0.0/10"):
                continue
            found.append((str(ip), port))
    return tuple(found) or (("127.0.0.1", port),)


class Daemon:
    """One running instance: owns the socket, the TUN device and the node."""

    def __init__(self, settings: Settings, identity: Identity, trust: Trust) -> None:
        self.settings = settings
        self.identity = identity
        self.trust = trust
        self.secret = trust.secret
        self.state = StateDir(settings.state_dir or default_state_dir(settings.interface))
        self.stopped = asyncio.Event()
        self.node: NodeRunner | None = None
        self.sock: socket.socket | None = None
        self.tun: TunDevice | None = None
        self.control: ControlServer | None = None
        self.transport: DataPlane | None = None
        self.magic_dns: MagicDns | None = None
        self.links: StreamLinks | None = None
        self.kernel_routes: KernelRoutes | None = None
        self.subnet_router: SubnetRouter | None = None
        self.exit_route: ExitRoute | None = None
        self._exit_usable = False
        self._subnets: tuple[Prefix, ...] = ()
        """The approved subnets of other nodes, as the node last reported them."""
        self.ready = False
        """True once the node has joined and MagicDNS (if any) serves: `status` says so."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        self.sock = open_udp_socket(settings.listen)
        port = self.sock.getsockname()[1]
        options = NodeOptions(
            name=self.trust.name,
            ipv4_network=settings.ipv4_network,
            listen_port=port,
            host_endpoints=await asyncio.to_thread(host_endpoints, port),
            bootstrap=settings.bootstrap,
            timer_scale=settings.timer_scale,
            leaves=settings.leaf,
            service_addresses=(RESOLVER_IPV4, RESOLVER_IPV6) if settings.dns != "off" else (),
            advertised_routes=settings.advertise_routes
            + ((DEFAULT_IPV4, DEFAULT_IPV6) if settings.advertise_exit_node else ()),
            exit_node=settings.exit_node,
            authority_public_key=self.trust.authority_public_key,
            certificate=self.trust.certificate,
        )
        # The node needs the TUN fd for writes, and the TUN needs the node's
        # address: claim the address first (start() does), then bring the
        # device up before any packet can arrive for it.
        offloads = offload_mode()
        self.transport = DataPlane(
            self.sock,
            gso=offloads != "none",
            gro=offloads != "none",
            threads=os.environ.get(THREADS_ENV, "0") == "1",
        )
        node = NodeRunner(
            self.identity, self.secret, options, self.transport, state_dir=self.state.path
        )
        self.node = node
        node.on_event = self._on_node_event
        node.prepare()
        assert node.ipv4 is not None
        try:
            self.tun = await asyncio.to_thread(
                open_offload_tun if offloads == "all" else open_tun,
                settings.interface,
                MESH_MTU,
                [
                    ipaddress.IPv6Interface(f"{node.ipv6}/128"),
                    ipaddress.IPv4Interface(f"{node.ipv4}/32"),
                ],
                [IPV6_PREFIX, settings.ipv4_network],
            )
        except TunError as exc:
            raise UsageError(str(exc)) from None
        if settings.dns != "off":
            await asyncio.to_thread(add_resolver_addresses, self.tun.name)
        self.kernel_routes = KernelRoutes(self.tun.name, settings.ipv4_network)
        self.kernel_routes.submit(self._subnets)
        routed = options.advertised_routes
        if routed:
            snat = settings.snat or settings.advertise_exit_node
            self.subnet_router = SubnetRouter(self.tun.name, routed, snat)
            try:
                self.subnet_router.start()
            except OSError as exc:
                raise UsageError(f"--advertise-routes: {exc}") from None
        if settings.exit_node is not None:
            self.exit_route = ExitRoute(self.tun.name)  # in force once the exit is reachable
            self._check_exit()
        vnet = isinstance(self.tun, OffloadTunDevice)
        self.transport.attach_tun(self.tun.fd, vnet=vnet)
        self._enable_links(loop, node, port, vnet)
        loop.add_reader(self.sock.fileno(), self._on_socket_readable)
        loop.add_reader(self.tun.fd, self._on_tun_readable)
        self.control = ControlServer(self.state.control_socket, self._handlers())
        await self.control.start()
        counters = node.counters
        install_busy_poll(  # GOSSIPMESH_BUSY_POLL_US: microseconds, default 100, 0 = off
            loop,
            [(self.sock.fileno(), self._on_socket_readable), (self.tun.fd, self._on_tun_readable)],
            lambda: counters.tun_packets + counters.delivered,
        )
        await node.start()
        if settings.dns != "off":
            self.magic_dns = await start_magic_dns(
                PeerTableView(node.directory, node.lookup_name),
                config=resolver_config(settings),
                mode=settings.dns,
                interface=self.tun.name,
                state_dir=self.state.path,
            )
        else:  # leave the host alone, but undo what a crashed run of ours left there
            await asyncio.to_thread(recover_resolv_conf, RESOLV_CONF, self.state.path)
        self.ready = True
        log.info(
            "up: %s %s (%s) on %s, UDP port %d",
            node.ipv4,
            node.ipv6,
            self.trust.name or "no name",
            self.tun.name,
            port,
        )
        await self.stopped.wait()

    def _enable_links(
        self, loop: asyncio.AbstractEventLoop, node: NodeRunner, port: int, vnet: bool
    ) -> None:
        """Accept and offer stream links, where the settings and the TUN allow them."""
        if not self.settings.stream_links:
            return
        if not vnet:
            log.info("stream links off: the TUN device has no offloads (UDP carries everything)")
            return
        try:
            listener = open_link_listener(port)
        except OSError as exc:
            log.warning("stream links off: cannot listen on TCP port %d: %s", port, exc.strerror)
            return
        assert self.transport is not None
        planner = node.core.links.planner
        links = StreamLinks(loop, node, listener, planner.max_age(), planner.connect_timeout())
        self.links = links
        node.enable_links(
            port,
            lambda request: links.connect_link(request.order, request.host),
            self.transport.write_tun_frame,
        )
        self.transport.after_flush = self.links.flush

    def _check_exit(self) -> None:
        """The chosen exit approved and reachable: route through it; else the host's own."""
        exit_route, routes, node = self.exit_route, self.kernel_routes, self.node
        if exit_route is None or routes is None or node is None:
            return
        core = node.core
        exit_id = core.addresses.exit_node()
        usable = exit_id is not None and core.routing.route(exit_id) is not None
        usable = usable and any(
            owner == exit_id and prefix.prefixlen == 0 for prefix, owner in core.directory.prefixes
        )
        if usable != self._exit_usable:
            self._exit_usable = usable
            routes.run(lambda: exit_route.set_active(usable))

    def _on_node_event(self, event: NodeEvent) -> None:
        if isinstance(event, RoutesChanged | RoutedPrefixesChanged):
            self._check_exit()
        if isinstance(event, RoutedPrefixesChanged):
            self._subnets = event.prefixes
            if self.kernel_routes is not None:
                self.kernel_routes.submit(event.prefixes)

    async def close(self) -> None:
        """Tear down in reverse: DNS wiring, links, node, control socket, readers, TUN, socket."""
        loop = asyncio.get_running_loop()
        if self.subnet_router is not None:
            self.subnet_router.close()
        if self.kernel_routes is not None:
            await asyncio.to_thread(self.kernel_routes.close)  # finishes queued route changes
            self.kernel_routes = None
        if self.exit_route is not None:
            await asyncio.to_thread(self.exit_route.close)
        if self.magic_dns is not None:
            outcome = await self.magic_dns.stop()
            log.info("host DNS: %s", outcome.value)
        if self.links is not None:
            if self.transport is not None:
                self.transport.after_flush = None
            self.links.close()
        if self.node is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.node.stop(), 5.0)
        if self.control is not None:
            await self.control.stop()
        if self.transport is not None:
            self.transport.close()  # its threads finish their writes before the fds close
        if self.sock is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if self.tun is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.tun.fd)
            self.tun.close()

    # --- the data plane's two readers --------------------------------------------

    def _on_socket_readable(self) -> None:
        assert self.transport is not None and self.node is not None
        self.transport.drain_socket(self.node.datagram_received, self.node.datagrams_received)

    def _on_tun_readable(self) -> None:
        assert self.transport is not None and self.node is not None
        self.transport.drain_tun(self.node.tun_packet, self.node.tun_packets, self.node.tun_frame)

    # --- control socket -------------------------------------------------------------

    def _handlers(self) -> dict[str, Any]:
        async def status(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            result = self.node.status()
            result["interface"] = self.tun.name if self.tun else None
            result["state_dir"] = str(self.state.path)
            result["ready"] = self.ready
            if self.transport is not None:
                # Drops at the OS edge (a full socket buffer, a TUN write refused):
                # counted by the transport, invisible to the node.
                result["counters"]["send_errors"] = self.transport.send_errors
                result["counters"]["tun_write_errors"] = self.transport.tun_write_errors
            if self.links is not None:
                result["stream_links"]["refused"] = self.links.refused
            return result

        async def peers(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            return self.node.peers()

        async def routes(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            return self.node.routes()

        async def subnets(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            return self.node.views.subnets()

        async def ping(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            target = str(args.get("target", ""))
            count = int(args.get("count", 3))
            try:
                return await self.node.ping(target, count)
            except LookupError as exc:
                raise GossipmeshError(str(exc)) from None

        async def resolve(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            name = str(args.get("name", ""))
            forwarder = self.magic_dns.forwarder if self.magic_dns is not None else None
            return await resolve_for_cli(
                name,
                PeerTableView(self.node.directory, self.node.lookup_name),
                config=resolver_config(self.settings),
                forwarder=forwarder,
            )

        async def netcheck(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            return await self.node.netcheck()

        async def wg_config(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            try:
                return self.node.wg_config(str(args.get("name", "")))
            except LookupError as exc:
                raise GossipmeshError(str(exc)) from None

        async def push_document(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            try:
                data = base64.b64decode(str(args.get("document", "")), validate=True)
            except (binascii.Error, ValueError):
                raise UsageError("the document is not valid base64") from None
            document = self.node.push_document(data)  # DocumentError: the CLI shows why
            return {"kind": document.kind.name.lower(), "version": document.version}

        async def trust(args: Mapping[str, Any]) -> Any:
            assert self.node is not None
            return self.node.views.trust()

        async def down(args: Mapping[str, Any]) -> Any:
            asyncio.get_running_loop().call_soon(self.stopped.set)
            return {"stopping": True}

        return {
            "status": status,
            "peers": peers,
            "routes": routes,
            "subnets": subnets,
            "ping": ping,
            "resolve": resolve,
            "wg-config": wg_config,
            "netcheck": netcheck,
            "push-document": push_document,
            "trust": trust,
            "down": down,
        }


async def _serve(settings: Settings, identity: Identity, trust: Trust) -> None:
    daemon = Daemon(settings, identity, trust)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, daemon.stopped.set)
    try:
        await daemon.run()
    finally:
        log.info("shutting down")
        await daemon.close()


def run_daemon(settings: Settings) -> None:
    """Everything `gossipmesh up` does, in the foreground, until a stop signal."""
    configure_logging(settings.log_level, settings.log_format)
    preflight()
    keep_freed_memory()
    state = StateDir(settings.state_dir or default_state_dir(settings.interface))
    state.create()
    lock = InstanceLock(state.lock_file)
    lock.acquire(f"interface {settings.interface}")
    try:
        key_path: Path = settings.key or state.path / "node.key"
        identity, created = load_or_create_key_file(key_path)
        if created:
            log.info("created a new node key at %s", key_path)
        trust = load_trust(settings, identity)
        settings = dataclasses.replace(settings, ipv4_network=trust.ipv4_network)
        started = time.monotonic()
        asyncio.run(_serve(settings, identity, trust))
        log.info("stopped after %.0f s", time.monotonic() - started)
    finally:
        lock.release()
