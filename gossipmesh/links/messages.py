"""Negotiating a stream link, inside the WireGuard session of two nodes.

The node that wants a link (it has bulk traffic for the peer) picks a token
and both directions' keys and offers them; the peer answers with the TCP
port to connect to, or declines. The session's encryption keeps token and
keys secret and its authentication binds them to the peer, so whoever later
presents the token on a TCP connection is the peer, and only the peer can
seal frames for it. A node that predates links counts the offer as an
unknown control message and never answers: the offer times out and traffic
stays on UDP. Stock WireGuard peers are never offered a link.

    LINK_OFFER   u8 kind | u8 version | 16s token | 32s key to acceptor | 32s key to connector
    LINK_ACCEPT  u8 kind | 16s token | u16 TCP port
    LINK_DECLINE u8 kind | 16s token | u8 reason
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from gossipmesh.links.frames import KEY_SIZE, TOKEN_SIZE
from gossipmesh.wire import PayloadKind

VERSION: Final = 1
_OFFER = struct.Struct(f"!BB{TOKEN_SIZE}s{KEY_SIZE}s{KEY_SIZE}s")
_ACCEPT = struct.Struct(f"!B{TOKEN_SIZE}sH")
_DECLINE = struct.Struct(f"!B{TOKEN_SIZE}sB")


class MalformedLinkMessage(ValueError):
    """A link negotiation payload could not be decoded."""


class DeclineReason(IntEnum):
    DISABLED = 1
    """This node does not accept stream links (configuration, or no offload TUN)."""
    CROSSED = 2
    """Both nodes offered at once; the lower node id's offer goes ahead."""
    BUSY = 3
    """Too many links are being set up."""


@dataclass(frozen=True)
class LinkOffer:
    token: bytes
    to_acceptor: bytes
    """Key for frames from the connector (who offered) to the acceptor."""
    to_connector: bytes


@dataclass(frozen=True)
class LinkAccept:
    token: bytes
    port: int


@dataclass(frozen=True)
class LinkDecline:
    token: bytes
    reason: DeclineReason


def encode_offer(offer: LinkOffer) -> bytes:
    return _OFFER.pack(
        PayloadKind.LINK_OFFER, VERSION, offer.token, offer.to_acceptor, offer.to_connector
    )


def encode_accept(accept: LinkAccept) -> bytes:
    return _ACCEPT.pack(PayloadKind.LINK_ACCEPT, accept.token, accept.port)


def encode_decline(decline: LinkDecline) -> bytes:
    return _DECLINE.pack(PayloadKind.LINK_DECLINE, decline.token, decline.reason)


def decode_link_message(payload: bytes) -> LinkOffer | LinkAccept | LinkDecline:
    """One of the three messages; MalformedLinkMessage for anything else."""
    if not payload:
        raise MalformedLinkMessage("empty payload")
    kind = payload[0]
    if kind == PayloadKind.LINK_OFFER:
        if len(payload) != _OFFER.size:
            raise MalformedLinkMessage("bad LINK_OFFER length")
        _, version, token, to_acceptor, to_connector = _OFFER.unpack(payload)
        if version != VERSION:
            raise MalformedLinkMessage(f"unknown link version {version}")
        return LinkOffer(token, to_acceptor, to_connector)
    if kind == PayloadKind.LINK_ACCEPT:
        if len(payload) != _ACCEPT.size:
            raise MalformedLinkMessage("bad LINK_ACCEPT length")
        _, token, port = _ACCEPT.unpack(payload)
        if port == 0:
            raise MalformedLinkMessage("LINK_ACCEPT names port 0")
        return LinkAccept(token, port)
    if kind == PayloadKind.LINK_DECLINE:
        if len(payload) != _DECLINE.size:
            raise MalformedLinkMessage("bad LINK_DECLINE length")
        _, token, reason = _DECLINE.unpack(payload)
        try:
            return LinkDecline(token, DeclineReason(reason))
        except ValueError:
            raise MalformedLinkMessage(f"unknown decline reason {reason}") from None
    raise MalformedLinkMessage(f"not a link message: kind {kind:#x}")
