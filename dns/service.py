"""MagicDNS as one start/stop pair for the daemon: upstreams, resolver, servers, host wiring.

The order matters and lives here so the daemon cannot get it wrong: a
resolv.conf edit left by a crashed run is undone first (in every mode), the
host's upstreams are read *before* its resolver configuration is changed,
the servers listen before the host is pointed at them, and on stop the host
is restored before the servers close.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gossipmesh.addressing import RESOLVER_IPV4, RESOLVER_IPV6
from gossipmesh.config import Settings
from gossipmesh.dns.config import ResolverConfig
from gossipmesh.dns.directory import MeshDirectory
from gossipmesh.dns.forward import DEFAULT_FORWARD_TIMEOUT, AiodnsForwarder
from gossipmesh.dns.host import (
    RESOLV_CONF,
    RESOLVED_SOCKET,
    DnsIntegrationError,
    HostDns,
    RestoreOutcome,
    Runner,
    host_dns,
    recover_resolv_conf,
    run_command,
    upstreams_before_gossipmesh,
)
from gossipmesh.dns.resolver import MeshResolver
from gossipmesh.dns.reverse import reverse_zones
from gossipmesh.dns.server import DnsServer, serve_dns

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ((str(RESOLVER_IPV4), 53), (str(RESOLVER_IPV6), 53))


def resolver_config(settings: Settings) -> ResolverConfig:
    """The resolver's zone as the daemon's settings define it."""
    return ResolverConfig(suffix=settings.dns_suffix, ipv4_network=settings.ipv4_network)


@dataclass
class MagicDns:
    """A running resolver and the host wiring that points at it."""

    resolver: MeshResolver
    servers: list[DnsServer]
    host: HostDns
    forwarder: AiodnsForwarder

    @property
    def upstreams(self) -> list[str]:
        return self.forwarder.upstreams

    async def stop(self) -> RestoreOutcome:
        """Restore the host first (so nothing points at a dead resolver), then close."""
        try:
            outcome = self.host.restore()
        finally:
            for server in self.servers:
                await server.close()
            await self.forwarder.close()
        return outcome


async def start_magic_dns(
    view: MeshDirectory,
    *,
    config: ResolverConfig | None = None,
    mode: str = "auto",
    interface: str,
    state_dir: Path,
    listen: Sequence[tuple[str, int]] = DEFAULT_LISTEN,
    upstreams: Sequence[str] | None = None,
    forward_timeout: float = DEFAULT_FORWARD_TIMEOUT,
    resolv_conf: Path = RESOLV_CONF,
    resolved_socket: Path = RESOLVED_SOCKET,
    runner: Runner = run_command,
) -> MagicDns:
    """Start serving on every `listen` address and wire the host per `mode`.

    `upstreams` overrides what is read from `resolv_conf` (tests, or an
    operator's explicit choice). The listen addresses must already be
    assigned (the daemon adds them to its TUN device or loopback). A
    resolv.conf edit left by a crashed run is undone first, in every mode.
    """
    config = config or ResolverConfig()
    recover_resolv_conf(resolv_conf, state_dir)
    addresses = [host for host, _ in listen]
    if upstreams is None:
        upstreams = upstreams_before_gossipmesh(resolv_conf, state_dir, addresses)
    forwarder = AiodnsForwarder(upstreams, timeout=forward_timeout)
    resolver = MeshResolver(view, config, forwarder)
    servers: list[DnsServer] = []
    try:
        for host, port in listen:
            try:
                servers.append(await serve_dns(resolver, host, port))
            except OSError as exc:
                raise DnsIntegrationError(
                    f"cannot listen for DNS on {host} port {port}: {exc.strerror or exc}"
                ) from None
        wiring = host_dns(
            mode,
            interface=interface,
            domains=[config.suffix, *reverse_zones(config)],
            servers=addresses,
            state_dir=state_dir,
            resolv_conf=resolv_conf,
            resolved_socket=resolved_socket,
            runner=runner,
        )
        wiring.apply()
    except BaseException:
        for server in servers:
            with contextlib.suppress(Exception):
                await server.close()
        await forwarder.close()
        raise
    log.info(
        "MagicDNS on %s (host: %s), forwarding to %s",
        ", ".join(
            f"{host}:{server.port}" for (host, _), server in zip(listen, servers, strict=True)
        ),
        wiring.mode,
        ", ".join(upstreams) or "nobody",
    )
    return MagicDns(resolver, servers, wiring, forwarder)
