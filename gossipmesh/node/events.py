"""What the node core hands its driver: events to observe and requests to carry out.

Events report what happened (h11-style small frozen classes). Requests ask
the driver for work the core cannot do without I/O — the DHT, probes over
it, the state file, a TCP connection — and each names the call that feeds
its result back (`NodeCore.records_fetched`, `probe_finished`, ...).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from gossipmesh.links.planner import ConnectOrder
from gossipmesh.records import NameRecord, NodeRecord

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """A session endpoint meaning "through the routing table's relays to this node"."""

    node_id: bytes


# --- events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerUp:
    """A direct path to the node answered: it is a routing neighbour now."""

    node_id: bytes
    endpoint: Address


@dataclass(frozen=True, slots=True)
class PeerDown:
    """A neighbour stopped answering keepalives; it is reached through relays, if at all."""

    node_id: bytes


@dataclass(frozen=True, slots=True)
class RoutesChanged:
    reachable: int


@dataclass(frozen=True, slots=True)
class NameChanged:
    """A node's record changed the name (or key name) the directory answers for it."""

    node_id: bytes
    name: str | None


@dataclass(frozen=True, slots=True)
class AddressChanged:
    """This node had to move to another IPv4 (the collision rule displaced it)."""

    ipv4: str


@dataclass(frozen=True, slots=True)
class EchoAnswered:
    """A mesh ping's reply arrived; `at` is the core's clock when it did."""

    nonce: int
    at: float


@dataclass(frozen=True, slots=True)
class RoutedPrefixesChanged:
    """The subnets other nodes route for (approved), in directory order: the kernel's routes."""

    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True, slots=True)
class DocumentAccepted:
    """A newer policy or revocation list from the authority is in force now."""

    kind: int
    version: int


NodeEvent = (
    PeerUp
    | PeerDown
    | RoutesChanged
    | NameChanged
    | AddressChanged
    | EchoAnswered
    | DocumentAccepted
    | RoutedPrefixesChanged
)


# --- requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishRecords:
    """Publish these templates in the DHT; feed the signed result to `records_published`."""

    node_record: NodeRecord
    name_record: NameRecord | None


@dataclass(frozen=True, slots=True)
class FetchRecords:
    """Look these node ids up in the DHT; feed what is found to `records_fetched`.

    An empty list still asks the driver to report the DHT's contacts
    (`dht_contacts`), so the core learns of nodes it has no record of.
    """

    node_ids: tuple[bytes, ...]
    periodic: bool = True
    """The directory round's: its answer times the next round (`round_finished`)."""


@dataclass(frozen=True, slots=True)
class ProbeEndpoints:
    """Send a sealed DHT echo to every candidate at once; report the first to answer.

    Feed `probe_finished(node_id, endpoint or None, answering, now)` back.
    """

    node_id: bytes
    candidates: tuple[Address, ...]
    answering: bool


@dataclass(frozen=True, slots=True)
class DhtDatagram:
    """A type-5 datagram for the DHT service (it opens and verifies it itself)."""

    data: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class SaveAddressState:
    """Persist this (address.json): the IPv4 counter and claim times survive restarts."""

    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConnectLink:
    """Open the stream link the planner ordered, to `host` (the peer's UDP host)."""

    order: ConnectOrder
    host: str


@dataclass(frozen=True, slots=True)
class SaveDocument:
    """Persist this verified authority document (it must survive restarts)."""

    kind: int
    data: bytes


NodeRequest = (
    PublishRecords
    | FetchRecords
    | ProbeEndpoints
    | DhtDatagram
    | SaveAddressState
    | ConnectLink
    | SaveDocument
)
