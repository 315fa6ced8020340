"""The reflexive endpoint: the address:port at which other members see this node.

Learned by asking a few routing-table neighbours (the sealed stun RPC) and
taking the most common answer, so one lying or confused peer cannot move it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter

from gossipmesh.discovery.server import RecordServer
from gossipmesh.records import Endpoint, EndpointKind

REFLEXIVE_QUORUM = 3
"""Peers asked how they see us; the most common answer wins."""


class ReflexiveEndpoint:
    """Holds the last learned reflexive endpoint and relearns it on request."""

    def __init__(self) -> None:
        self.endpoint: Endpoint | None = None

    async def learn(self, server: RecordServer) -> bool:
        """Ask the closest neighbours; True when the endpoint changed (records need reissuing)."""
        peers = server.protocol.router.find_neighbors(server.node, k=REFLEXIVE_QUORUM)
        if not peers:
            return False
        replies = await asyncio.gather(*(server.protocol.stun((p.ip, p.port)) for p in peers))
        seen: Counter[tuple[str, int]] = Counter()
        for answered, payload in replies:
            endpoint = parse_observed(payload) if answered else None
            if endpoint is not None:
                seen[endpoint] += 1
        if not seen:
            return False
        host, port = seen.most_common(1)[0][0]
        learned = Endpoint(EndpointKind.REFLEXIVE, host, port)
        if learned == self.endpoint:
            return False
        self.endpoint = learned
        return True


def parse_observed(payload: object) -> tuple[str, int] | None:
    """A stun reply: [host, port] as the peer saw our datagram (anything else is None)."""
    if not isinstance(payload, list) or len(payload) != 2:
        return None
    host, port = payload
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        return None
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        return None
    return (host, port) if 1 <= port <= 65535 else None
