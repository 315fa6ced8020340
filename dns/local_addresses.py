"""The resolver's addresses on the daemon's TUN device, never picked as a source address.

Both are local addresses, so the kernel delivers queries to them on this host.
Added like the node's own, though, they compete in source address selection:
for IPv6 (RFC 6724, rule 8: longest matching prefix) `fd00::53` shares more
leading bits with about half of all mesh addresses than the node's own
address does, so packets to those peers would leave from `fd00::53` and be
dropped as spoofed. Added *deprecated* (preferred lifetime 0) it is still
reachable but never chosen as a source (rule 3). The IPv4 address gets
scope `host`, which the kernel never picks as the source of a packet that
leaves the host, whatever the order the addresses were added in.

pyroute2's synchronous IPRoute runs a loop of its own: from inside asyncio,
call `add_resolver_addresses` in a thread.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pyroute2 import IPRoute

from gossipmesh.addressing import RESOLVER_IPV4, RESOLVER_IPV6
from gossipmesh.dns.host import DnsIntegrationError

IFA_F_NODAD = 0x02
"""No IPv6 duplicate address detection: the address is only ever local."""
RT_SCOPE_HOST = 254
FOREVER = 0xFFFFFFFF
"""An address lifetime that never runs out."""

ResolverAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def add_resolver_addresses(
    interface: str,
    addresses: Sequence[ResolverAddress] = (RESOLVER_IPV4, RESOLVER_IPV6),
) -> None:
    """Give `interface` the resolver's addresses, local-only and never a source address.

    They go when the interface goes (the TUN device is removed when the
    daemon's fd closes, also after a crash), so there is nothing to undo.
    """
    try:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=interface)[0]
            for address in addresses:
                if address.version == 4:
                    extra = {"scope": RT_SCOPE_HOST}
                else:
                    extra = {"flags": IFA_F_NODAD, "preferred": 0, "valid": FOREVER}
                ipr.addr(
                    "add",
                    index=index,
                    address=str(address),
                    prefixlen=address.max_prefixlen,
                    **extra,
                )
    except Exception as exc:  # pyroute2 raises NetlinkError, IndexError and others
        raise DnsIntegrationError(
            f"cannot add the MagicDNS addresses to {interface}: {exc} (or run with --dns off)"
        ) from None
