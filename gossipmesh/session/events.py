"""What a session manager tells the layer above, as small frozen records.

`peer` is always the peer's static X25519 public key (the peer table's key).
The data plane does not go through events: it uses `SessionManager.open_transport`
and `SessionManager.encrypt_for` directly.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PacketReceived:
    """A decrypted IPv4/IPv6 packet for the TUN device (padding removed)."""

    peer: bytes
    packet: bytes


@dataclass(frozen=True, slots=True)
class ControlReceived:
    """A decrypted payload whose first byte is not an IP version: for gossip, relay...

    Control payloads are sent unpadded (only IP packets are padded), so this is
    exactly the payload the peer sent.
    """

    peer: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A new keypair is in use. `initiator` says which side started the handshake."""

    peer: bytes
    initiator: bool
    local_index: int


@dataclass(frozen=True, slots=True)
class HandshakeAbandoned:
    """No answer for REKEY_ATTEMPT_TIME: staged payloads for this peer were dropped."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class EndpointChanged:
    """An authenticated packet came from a new address (roaming)."""

    peer: bytes
    endpoint: Hashable


SessionEvent = (
    PacketReceived | ControlReceived | HandshakeCompleted | HandshakeAbandoned | EndpointChanged
)
