"""What `gossipmesh resolve NAME` shows: the daemon's control handler calls `resolve_for_cli`.

It answers from the same view as the DNS server, and says where the answer
came from (the gossiped table, the DHT, or the upstream resolvers), which
`dig` cannot tell.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from gossipmesh.dns.answer import Rcode
from gossipmesh.dns.config import ResolverConfig
from gossipmesh.dns.directory import MeshDirectory, MeshHost
from gossipmesh.dns.forward import Forwarder
from gossipmesh.dns.resolver import DEFAULT_LOOKUP_TIMEOUT
from gossipmesh.names import is_valid_label


async def resolve_for_cli(
    name: str,
    view: MeshDirectory,
    *,
    config: ResolverConfig | None = None,
    forwarder: Forwarder | None = None,
    lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT,
) -> dict[str, Any]:
    """Resolve a mesh name (`server`, `server.mesh`), a mesh address, or any other name.

    The result is JSON-serialisable: `found`, `source` ('records', 'dht',
    'upstream' or None), `rcode`, and the host's fields or the upstream
    addresses; `error` says why nothing was found when that is not obvious.
    """
    config = config or ResolverConfig()
    text = name.strip().rstrip(".").lower()
    result: dict[str, Any] = {"query": name, "found": False, "source": None}
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is not None:
        host = view.host_by_address(address)
        return _with_host(result, host, "records", config)

    labels = text.split(".") if text else []
    if len(labels) == 1 or (len(labels) == 2 and labels[1] == config.suffix):
        label = labels[0]
        if not is_valid_label(label):
            result.update(rcode=Rcode.NXDOMAIN.name, error=f"{label!r} is not a valid name")
            return result
        host = view.host_by_name(label)
        if host is not None:
            return _with_host(result, host, "records", config)
        try:
            host = await asyncio.wait_for(view.lookup_name(label), lookup_timeout)
        except TimeoutError:
            result.update(rcode=Rcode.SERVFAIL.name, error="DHT lookup timed out")
            return result
        return _with_host(result, host, "dht", config)
    if labels and labels[-1] == config.suffix:
        result.update(rcode=Rcode.NXDOMAIN.name, error="mesh names have one label")
        return result

    if forwarder is None:
        result.update(rcode=Rcode.SERVFAIL.name, error="not a mesh name and no upstream resolver")
        return result
    addresses: list[str] = []
    rcode = Rcode.NXDOMAIN
    for qtype in ("A", "AAAA"):
        answer = await forwarder.forward(text, qtype)
        if answer is None:
            continue
        try:
            rcode = Rcode(answer.rcode)
        except ValueError:
            rcode = Rcode.SERVFAIL
        addresses += [str(rr.rdata) for rr in answer.answer if rr.rtype in (1, 28)]
    result.update(
        found=bool(addresses),
        source="upstream",
        rcode=Rcode.NOERROR.name if addresses else rcode.name,
        addresses=addresses,
    )
    return result


def _with_host(
    result: dict[str, Any], host: MeshHost | None, source: str, config: ResolverConfig
) -> dict[str, Any]:
    if host is None:
        result.update(rcode=Rcode.NXDOMAIN.name)
        return result
    result.update(
        found=True,
        source=source,
        rcode=Rcode.NOERROR.name,
        name=host.name,
        key_name=host.key_name,
        fqdn=f"{host.canonical_label}.{config.suffix}.",
        ipv4=None if host.ipv4 is None else str(host.ipv4),
        ipv6=str(host.ipv6),
    )
    return result
