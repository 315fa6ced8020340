"""Overlay addresses derived from node keys, and the IPv4 collision rule.

IPv6 needs no coordination: 120 hashed bits under fd00::/8 do not collide in
practice. IPv4 has only 22 bits in the default 100.64.0.0/10, so collisions
happen in large meshes and are settled by `resolve_ipv4_claims`, a pure
function over the signed claims every node sees through gossip.

The rule (also in docs/addressing.md):

1. A claim is (node id, counter, held_since). The address it claims is
   `ipv4_for(public key, counter)`.
2. For each address, the claim with the earliest `held_since` keeps it; equal
   times are broken by the lower node id. Since a newcomer's `held_since` is
   its join time, it can never take an address from a node that held it first.
3. Every other claimant of that address is displaced. Displaced nodes, in
   order of (held_since, node id), get the first counter above the one they
   claimed whose address is neither reserved, nor claimed by anyone, nor
   already given to an earlier displaced node. They then republish with the
   new counter and `held_since` = now, so the move is visible to all.

The outcome depends only on the set of claims, never on their order, and no
address is ever given to two nodes.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

IPV6_PREFIX = ipaddress.IPv6Network("fd00::/8")
DEFAULT_IPV4_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")

RESOLVER_IPV4 = ipaddress.IPv4Address("100.100.100.100")
"""The in-mesh DNS resolver's address: never derived for a node (Tailscale reserves the same)."""
RESOLVER_IPV6 = ipaddress.IPv6Address("fd00::53")
"""The in-mesh DNS resolver's IPv6 address: never derived for a node."""

MAX_COUNTER = 1 << 16
"""A node tries at most this many counters; a network that full needs a larger CIDR."""


def _digest(label: bytes, public_key: bytes, extra: bytes = b"") -> bytes:
    return hashlib.blake2b(public_key + extra, digest_size=32, person=label).digest()


def ipv6_for(public_key: bytes) -> ipaddress.IPv6Address:
    """The node's IPv6 /128: fd00::/8 plus 120 bits of a hash of its public key."""
    digest = _digest(b"gossipmesh-ipv6", public_key)
    candidate = ipaddress.IPv6Address(bytes([0xFD]) + digest[:15])
    if candidate == RESOLVER_IPV6:  # unreachable in practice; keeps the reservation absolute
        candidate = ipaddress.IPv6Address(bytes([0xFD]) + digest[15:30])
    return candidate


@functools.lru_cache(maxsize=16)
def reserved_ipv4(network: ipaddress.IPv4Network) -> frozenset[ipaddress.IPv4Address]:
    """Addresses never derived inside `network`: network, broadcast and the resolver."""
    reserved = {network.network_address, network.broadcast_address}
    if RESOLVER_IPV4 in network:
        reserved.add(RESOLVER_IPV4)
    return frozenset(reserved)


def ipv4_for(
    public_key: bytes,
    counter: int = 0,
    network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK,
) -> ipaddress.IPv4Address | None:
    """The IPv4 a key derives at `counter`, or None when that one is reserved.

    A reserved result makes the node try the next counter, like a collision.
    """
    if not 0 <= counter < MAX_COUNTER:
        raise ValueError(f"counter must be in [0, {MAX_COUNTER})")
    if network.num_addresses < 4:
        raise ValueError("the IPv4 network must hold at least 4 addresses (a /30)")
    digest = _digest(b"gossipmesh-ipv4", public_key, counter.to_bytes(4, "big"))
    host = int.from_bytes(digest[:8], "big") % network.num_addresses
    address = network.network_address + host
    if address in reserved_ipv4(network):
        return None
    return address


def first_ipv4(
    public_key: bytes,
    network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK,
    start: int = 0,
    taken: Iterable[ipaddress.IPv4Address] = (),
) -> tuple[int, ipaddress.IPv4Address]:
    """The first counter >= start whose address is neither reserved nor taken."""
    return _first_free(public_key, network, start, set(taken).__contains__)


def _first_free(
    public_key: bytes,
    network: ipaddress.IPv4Network,
    start: int,
    is_taken: Callable[[ipaddress.IPv4Address], bool],
) -> tuple[int, ipaddress.IPv4Address]:
    for counter in range(start, MAX_COUNTER):
        address = ipv4_for(public_key, counter, network)
        if address is not None and not is_taken(address):
            return counter, address
    raise ValueError(f"no free IPv4 address in {network} for this key")


@dataclass(frozen=True, order=True)
class AddressClaim:
    """A node's claim on an IPv4 address, as carried in its signed record."""

    held_since: int
    """When the node started holding this address (seconds, from its signed record)."""
    node_id: bytes
    public_key: bytes
    counter: int


@dataclass(frozen=True)
class ClaimOutcome:
    """What the collision rule decides for one node."""

    address: ipaddress.IPv4Address
    counter: int
    displaced: bool
    """True when the node lost its claimed address and must move to `counter`."""


def resolve_ipv4_claims(
    claims: Iterable[AddressClaim],
    network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK,
) -> Mapping[bytes, ClaimOutcome]:
    """Apply the documented collision rule; see the module docstring.

    If one node appears with several claims, its earliest-ordered claim counts.
    Claims whose counter derives a reserved address are treated as displaced.
    """
    by_node: dict[bytes, AddressClaim] = {}
    for claim in sorted(set(claims)):
        by_node.setdefault(claim.node_id, claim)
    ordered = sorted(by_node.values())

    holders: dict[ipaddress.IPv4Address, AddressClaim] = {}
    claimed: set[ipaddress.IPv4Address] = set()
    losers: list[AddressClaim] = []
    for claim in ordered:
        address = ipv4_for(claim.public_key, claim.counter, network)
        if address is None:
            losers.append(claim)
            continue
        claimed.add(address)
        if address in holders:
            losers.append(claim)
        else:
            holders[address] = claim

    outcome: dict[bytes, ClaimOutcome] = {
        claim.node_id: ClaimOutcome(address, claim.counter, displaced=False)
        for address, claim in holders.items()
    }
    given = set(claimed)
    for claim in losers:
        counter, address = first_ipv4(claim.public_key, network, claim.counter + 1, given)
        given.add(address)
        outcome[claim.node_id] = ClaimOutcome(address, counter, displaced=True)
    return outcome


class ClaimIndex:
    """`resolve_ipv4_claims` kept up to date one claim at a time (at most one per node).

    The directory changes one record at a time, and re-resolving every claim
    on each change is O(n) per update, O(n^2) for a node joining a mesh of n.
    Here a claim touches only the claimants of its own address; displaced
    nodes (collisions: rare) are placed again, all of them, on every change
    while there are any. The outcomes are exactly those
    of `resolve_ipv4_claims` over the current claims (tests compare both).
    """

    def __init__(self, network: ipaddress.IPv4Network = DEFAULT_IPV4_NETWORK) -> None:
        self.network = network
        self.outcomes: dict[bytes, ClaimOutcome] = {}
        self._claims: dict[bytes, AddressClaim] = {}
        self._address_of: dict[bytes, ipaddress.IPv4Address | None] = {}
        self._claimants: dict[ipaddress.IPv4Address, dict[bytes, AddressClaim]] = {}
        """Every claimed address -> its claimants by node id; the holder is the least claim."""
        self._losers: dict[bytes, AddressClaim] = {}
        """Claims that lost their address (or derive a reserved one)."""

    def put(self, claim: AddressClaim) -> set[bytes]:
        """Set a node's claim; returns the node ids whose outcome changed."""
        node_id = claim.node_id
        if self._claims.get(node_id) == claim:
            return set()
        before = self._snapshot(node_id)
        self._drop(node_id)
        self._claims[node_id] = claim
        address = self._address_of[node_id] = ipv4_for(
            claim.public_key, claim.counter, self.network
        )
        if address is None:
            self._losers[node_id] = claim
        else:
            claimants = self._claimants.get(address)
            if claimants is None:
                self._claimants[address] = {node_id: claim}
                self.outcomes[node_id] = ClaimOutcome(address, claim.counter, displaced=False)
            else:
                holder = min(claimants.values())
                claimants[node_id] = claim
                if claim < holder:
                    before.setdefault(holder.node_id, self.outcomes.get(holder.node_id))
                    self._losers[holder.node_id] = holder
                    self.outcomes[node_id] = ClaimOutcome(address, claim.counter, displaced=False)
                else:
                    self._losers[node_id] = claim
        return self._settle(before)

    def remove(self, node_id: bytes) -> set[bytes]:
        """Forget a node's claim; returns the node ids whose outcome changed."""
        if node_id not in self._claims:
            return set()
        before = self._snapshot(node_id)
        self._drop(node_id)
        return self._settle(before)

    def _snapshot(self, node_id: bytes) -> dict[bytes, ClaimOutcome | None]:
        before = {node_id: self.outcomes.get(node_id)}
        before.update((loser, self.outcomes.get(loser)) for loser in self._losers)
        return before

    def _drop(self, node_id: bytes) -> None:
        """Remove a node's claim from the indexes (its address may pass to the next claimant)."""
        claim = self._claims.pop(node_id, None)
        if claim is None:
            return
        self.outcomes.pop(node_id, None)
        address = self._address_of.pop(node_id)
        self._losers.pop(node_id, None)
        if address is None:
            return
        claimants = self._claimants[address]
        del claimants[node_id]
        if not claimants:
            del self._claimants[address]
            return
        holder = min(claimants.values())
        if self._losers.pop(holder.node_id, None) is not None:
            # The dropped claim held the address: the next claimant takes it over.
            self.outcomes[holder.node_id] = ClaimOutcome(address, holder.counter, displaced=False)

    def _settle(self, before: dict[bytes, ClaimOutcome | None]) -> set[bytes]:
        """Place the displaced nodes again (they depend on every claim); report changes.

        O(displaced), and nothing at all while no address is contested.
        """
        if self._losers:
            given: set[ipaddress.IPv4Address] = set()

            def taken(address: ipaddress.IPv4Address) -> bool:
                return address in self._claimants or address in given

            for claim in sorted(self._losers.values()):
                counter, address = _first_free(
                    claim.public_key, self.network, claim.counter + 1, taken
                )
                given.add(address)
                self.outcomes[claim.node_id] = ClaimOutcome(address, counter, displaced=True)
        return {n for n, outcome in before.items() if self.outcomes.get(n) != outcome}


def parse_ipv4_network(text: str) -> ipaddress.IPv4Network:
    """Parse a mesh CIDR such as 100.64.0.0/10, with a message that says what is wrong."""
    try:
        network = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network in CIDR form: {exc}") from None
    if network.prefixlen > 30:
        raise ValueError("the IPv4 network must be a /30 or larger")
    return network
