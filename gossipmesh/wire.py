"""The first byte of every datagram on a node's one UDP port.

1-4 are WireGuard's own message types, byte-compatible with stock WireGuard
peers. Everything gossipmesh adds takes a number above them, so a stock peer
never receives anything it does not understand.
"""

from __future__ import annotations

from enum import IntEnum


class MessageType(IntEnum):
    HANDSHAKE_INITIATION = 1
    HANDSHAKE_RESPONSE = 2
    COOKIE_REPLY = 3
    TRANSPORT_DATA = 4
    DHT = 5
    """A `kademlia` RPC datagram sealed with the network's DHT key."""


def message_type(datagram: bytes) -> MessageType | None:
    """The type of a received datagram, or None when unknown (to be dropped and counted)."""
    if not datagram:
        return None
    try:
        return MessageType(datagram[0])
    except ValueError:
        return None


class PayloadKind(IntEnum):
    """The first byte of a decrypted transport payload, above IP's version nibble.

    IPv4 (0x4_) and IPv6 (0x6_) packets go to the TUN device; these values are
    gossipmesh control messages, chosen outside 0x40-0x6F.
    """

    GOSSIP = 0x10
    PING = 0x11
    PONG = 0x12
    RELAY = 0x13
    ENDPOINT_HINT = 0x14
    RENDEZVOUS = 0x15
    NODE_RECORDS = 0x16
    """Signed node records handed to a neighbour (gossipmesh.node.messages)."""
    RECORD_REQUEST = 0x17
    """Node ids whose records a node lacks, asked of a neighbour."""
    ECHO_REQUEST = 0x18
    """End-to-end mesh ping (`gossipmesh ping`), through relays when needed."""
    ECHO_REPLY = 0x19
    LINK_OFFER = 0x1A
    """A stream link proposed (gossipmesh.links.messages): token and both keys."""
    LINK_ACCEPT = 0x1B
    LINK_DECLINE = 0x1C
    NEIGHBOUR_PRUNE = 0x1D
    """'No routing link between us' (gossipmesh.node.neighbours): the bound on neighbours."""
    NEIGHBOUR_OFFER = 0x1E
    """'Be my routing neighbour', with the RTT the offerer measured (node/neighbours.py)."""
    RECORD_DIGEST = 0x1F
    """(node id, sequence) of the records a new neighbour holds: the other pulls what it lacks."""
    DOCUMENT_DIGEST = 0x20
    """Versions of the authority's documents a node holds (gossipmesh.node.documents)."""
    DOCUMENT_CHUNK = 0x21
    """A piece of a signed policy or revocation list pushed to a neighbour that lacks it."""


def is_ip_packet(payload: bytes) -> bool:
    return bool(payload) and (payload[0] >> 4) in (4, 6)
