"""mac1, mac2 and cookie replies: cheap proof that an initiation is worth a DH.

mac1 (always checked) proves the sender knows our public key. Under load the
responder also wants mac2, keyed by a cookie that proves the sender receives
at its source address; without it, the sender gets a cookie reply (encrypted
with XChaCha20-Poly1305 under a key from our public key, bound to the mac1 it
answers) and nothing else is computed.
"""

from __future__ import annotations

import hmac

from gossipmesh.session.crypto import (
    LABEL_COOKIE,
    LABEL_MAC1,
    MAC_SIZE,
    AuthenticationError,
    RandomSource,
    hash_bytes,
    mac,
    xaead_decrypt,
    xaead_encrypt,
)
from gossipmesh.session.messages import MACS_SIZE, build_cookie_reply

COOKIE_SECRET_LIFETIME = 120.0
"""The responder's cookie secret changes every two minutes (seconds, unscaled)."""
COOKIE_LIFETIME = 120.0
"""An initiator uses a received cookie for two minutes, less a margin, as WireGuard does."""
COOKIE_NONCE_SIZE = 24
_NO_MAC = bytes(MAC_SIZE)


def address_bytes(addr: object) -> bytes:
    """Bytes naming a source address for the cookie; any hashable address works."""
    return repr(addr).encode("utf-8", "surrogatepass")


class CookieChecker:
    """The responder's side, keyed by our own static public key."""

    def __init__(self, static_public: bytes, random_bytes: RandomSource) -> None:
        self.mac1_key = hash_bytes(LABEL_MAC1, static_public)
        self.cookie_key = hash_bytes(LABEL_COOKIE, static_public)
        self._random_bytes = random_bytes
        self._secret = random_bytes(32)
        self._secret_born: float | None = None

    def mac1_valid(self, message: bytes) -> bool:
        expected = mac(self.mac1_key, message[:-MACS_SIZE])
        return hmac.compare_digest(expected, message[-MACS_SIZE:-MAC_SIZE])

    def _cookie(self, addr: object, now: float) -> bytes:
        if self._secret_born is None or now - self._secret_born >= COOKIE_SECRET_LIFETIME:
            self._secret = self._random_bytes(32)
            self._secret_born = now
        return mac(self._secret, address_bytes(addr))

    def mac2_valid(self, message: bytes, addr: object, now: float) -> bool:
        if self._secret_born is None or now - self._secret_born >= COOKIE_SECRET_LIFETIME:
            return False
        expected = mac(mac(self._secret, address_bytes(addr)), message[:-MAC_SIZE])
        return hmac.compare_digest(expected, message[-MAC_SIZE:])

    def cookie_reply(self, message: bytes, sender_index: int, addr: object, now: float) -> bytes:
        """A 64-byte cookie reply to `message` (an initiation or response from `addr`)."""
        nonce = self._random_bytes(COOKIE_NONCE_SIZE)
        mac1 = message[-MACS_SIZE:-MAC_SIZE]
        encrypted = xaead_encrypt(self.cookie_key, nonce, self._cookie(addr, now), mac1)
        return build_cookie_reply(sender_index, nonce, encrypted)


class CookieJar:
    """The sender's side for one peer: MACs on our handshake messages, cookies it gave us."""

    __slots__ = ("_cookie", "_cookie_time", "_last_mac1", "cookie_key", "mac1_key")

    def __init__(self, peer_static_public: bytes) -> None:
        self.mac1_key = hash_bytes(LABEL_MAC1, peer_static_public)
        self.cookie_key = hash_bytes(LABEL_COOKIE, peer_static_public)
        self._cookie: bytes | None = None
        self._cookie_time = 0.0
        self._last_mac1: bytes | None = None

    def seal(self, body: bytes, now: float) -> bytes:
        """Append mac1 and mac2 (zeros unless a fresh cookie is held)."""
        mac1 = mac(self.mac1_key, body)
        self._last_mac1 = mac1
        with_mac1 = body + mac1
        if self._cookie is not None and now - self._cookie_time < COOKIE_LIFETIME - 5.0:
            return with_mac1 + mac(self._cookie, with_mac1)
        return with_mac1 + _NO_MAC

    def consume_reply(self, nonce: bytes, encrypted_cookie: bytes, now: float) -> bool:
        """Store the cookie of a reply to our last message; False if it does not decrypt."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = xaead_decrypt(self.cookie_key, nonce, encrypted_cookie, self._last_mac1)
        except AuthenticationError:
            return False
        self._cookie = cookie
        self._cookie_time = now
        self._last_mac1 = None
        return True
