"""Who is on each side of a flow, as the policy sees it.

`PeerIdentity` is what the data path knows about an authenticated mesh peer
(from its certificate) and about this node itself. `Endpoint` is the
reference evaluator's view of one side of a flow: the synthetic nodes of a
policy's [[tests]] and the real packets' sides both reduce to it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A certified node: its name, its groups and the overlay addresses it holds itself.

    Identity selectors (`host:NAME`, `group:NAME`) match a packet only when
    its address on that side is one of `addresses` (packed, 4 or 16 bytes):
    a packet from a subnet routed behind the node is not the node's own, so
    only address selectors and `*` speak about it. Names and groups are
    compared in lower case, as DNS labels are.
    """

    name: str
    groups: frozenset[str]
    addresses: frozenset[bytes]

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name.lower())
        object.__setattr__(self, "groups", frozenset(group.lower() for group in self.groups))
        for address in self.addresses:
            if len(address) not in (4, 16):
                raise ValueError(f"an address is 4 or 16 packed bytes, got {len(address)}")

    @property
    def principal(self) -> tuple[str, frozenset[str]]:
        """What identity selectors look at; the compiled policy caches per principal."""
        return (self.name, self.groups)


@dataclass(frozen=True)
class Endpoint:
    """One side of a flow for the reference evaluator.

    `name` is None for an endpoint with no certified name (a test's
    `group:web` node, a leaf, a host behind a node); `groups` are its
    certificate groups; `address` is None when a test gives none, and then no
    address selector matches it.
    """

    address: Address | None = None
    name: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of_packet(cls, identity: PeerIdentity | None, address: bytes) -> Endpoint:
        """The side of a real packet: identified only when the address is the node's own."""
        ip = ipaddress.ip_address(address)
        if identity is None or address not in identity.addresses:
            return cls(ip)
        return cls(ip, identity.name, identity.groups)
