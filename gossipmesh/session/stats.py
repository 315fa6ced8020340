"""Named counters for everything a session manager refuses or does.

Refusals are silent on the wire; these counters are how an operator (and a
test) sees them. Plain int attributes, so counting costs one attribute add.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class SessionStats:
    # refusals: the datagram itself
    unknown_type: int = 0
    malformed: int = 0
    """Wrong size for its type (truncated or oversized), or non-zero reserved bytes."""
    bad_mac1: int = 0
    bad_mac2: int = 0
    """Under load without a valid cookie MAC: answered with a cookie reply, not processed."""
    unknown_receiver_index: int = 0
    handshake_rate_limited: int = 0
    """Under load, more than 20 handshake messages per second from one source address."""
    # refusals: handshakes
    unknown_peer: int = 0
    """An initiation decrypted to a static key that is not in the peer table."""
    initiation_decrypt_failed: int = 0
    """Wrong static key (not ours), tampered, or a low-order ephemeral."""
    response_decrypt_failed: int = 0
    """Wrong preshared key, tampered, or not an answer to our initiation."""
    replayed_initiation: int = 0
    initiation_flood: int = 0
    cookie_reply_invalid: int = 0
    # refusals: transport
    transport_authentication_failed: int = 0
    transport_replayed: int = 0
    transport_too_old: int = 0
    """Counter below the anti-replay window."""
    transport_counter_rejected: int = 0
    """Counter at or beyond REJECT_AFTER_MESSAGES."""
    transport_keypair_expired: int = 0
    invalid_inner_packet: int = 0
    """Authenticated, but the IP header's length exceeds what arrived."""
    send_without_endpoint: int = 0
    send_unknown_peer: int = 0
    staged_dropped: int = 0
    # activity
    initiations_sent: int = 0
    initiations_received: int = 0
    responses_sent: int = 0
    responses_received: int = 0
    cookie_replies_sent: int = 0
    cookie_replies_received: int = 0
    handshakes_completed: int = 0
    handshake_attempts_abandoned: int = 0
    transport_sent: int = 0
    transport_received: int = 0
    keepalives_sent: int = 0
    keepalives_received: int = 0
    endpoint_changes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def refusals(self) -> dict[str, int]:
        """Only the refusal counters that are non-zero, for logs and tests."""
        activity = {
            "initiations_sent",
            "initiations_received",
            "responses_sent",
            "responses_received",
            "cookie_replies_sent",
            "cookie_replies_received",
            "handshakes_completed",
            "handshake_attempts_abandoned",
            "transport_sent",
            "transport_received",
            "keepalives_sent",
            "keepalives_received",
            "endpoint_changes",
        }
        return {k: v for k, v in asdict(self).items() if v and k not in activity}
