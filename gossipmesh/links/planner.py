"""When to offer, accept and retire stream links: the negotiation state, sans-IO.

One planner per node. It decides; the node sends what it returns inside the
WireGuard session, and the runtime opens and closes the TCP connections it
orders. Times are the node's monotonic clock, scaled like every protocol
timer (tests shorten them).

- A node offers a link to a peer it has bulk traffic for, unless one is up
  and young, an offer or a connection is under way (either way: after
  accepting the peer's offer it waits for the peer's connection), or the last
  attempt failed recently (backoff doubles from 10 s to 10 min).
- Offers that cross (both nodes offered at once) resolve the same way on
  both sides: the lower node id's offer goes ahead, the other is declined.
- A link's keys live at most LINK_MAX_AGE: after LINK_REFRESH the next bulk
  packet offers a replacement, and the runtime closes what reaches the maximum.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gossipmesh.links.frames import KEY_SIZE, TOKEN_SIZE
from gossipmesh.links.messages import (
    DeclineReason,
    LinkAccept,
    LinkDecline,
    LinkOffer,
    encode_accept,
    encode_decline,
    encode_offer,
)

OFFER_TIMEOUT: Final = 5.0
"""An offer unanswered this long is given up (a node that predates links never answers)."""
ACCEPT_TIMEOUT: Final = 10.0
"""An accepted token waits this long for its TCP connection."""
CONNECT_TIMEOUT: Final = 5.0
LINK_REFRESH: Final = 120.0
"""Offer a replacement for a link this old (WireGuard's REKEY_AFTER_TIME)."""
LINK_MAX_AGE: Final = 180.0
"""Close a link this old, replaced or not (WireGuard's REJECT_AFTER_TIME)."""
BACKOFF_FIRST: Final = 10.0
BACKOFF_MAX: Final = 600.0
MAX_PENDING: Final = 64
"""Offers and accepted tokens in flight at once; beyond it, decline (BUSY)."""

RandomSource = Callable[[int], bytes]


@dataclass(frozen=True)
class ConnectOrder:
    """The runtime's job: connect to the peer's address at `port` and present `token`."""

    peer_key: bytes
    token: bytes
    port: int
    send_key: bytes
    receive_key: bytes


@dataclass(frozen=True)
class AcceptedToken:
    """What an inbound connection that presents the token is bound to."""

    peer_key: bytes
    send_key: bytes
    receive_key: bytes
    expires: float


@dataclass
class _Offer:
    peer_key: bytes
    offer: LinkOffer
    expires: float


class LinkPlanner:
    """Negotiation state for one node's stream links."""

    def __init__(
        self,
        own_id: bytes,
        *,
        port: int | None,
        random: RandomSource = os.urandom,
        scale: float = 1.0,
    ) -> None:
        self.own_id = own_id
        self.port = port
        """The TCP port this node accepts links on; None: links are off here."""
        self._random = random
        self._scale = scale
        self._offers: dict[bytes, _Offer] = {}
        self._offer_by_peer: dict[bytes, bytes] = {}
        self._connecting: dict[bytes, float] = {}
        self._accepted: dict[bytes, AcceptedToken] = {}
        self._accepting: dict[bytes, float] = {}
        """Peers whose offer we accepted, until their connection comes (or the token expires)."""
        self._up_since: dict[bytes, float] = {}
        self._backoff: dict[bytes, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.port is not None

    def _seconds(self, value: float) -> float:
        return value / self._scale

    # --- offering -------------------------------------------------------------------

    def wants_link(self, peer_key: bytes, now: float) -> bool:
        """Cheap test for the data path: would `make_offer` offer now?"""
        if self.port is None:
            return False
        since = self._up_since.get(peer_key)
        if since is not None and now - since < self._seconds(LINK_REFRESH):
            return False
        if peer_key in self._offer_by_peer or peer_key in self._connecting:
            self._expire_attempts(peer_key, now)
            return False
        accepting = self._accepting.get(peer_key)
        if accepting is not None:
            if now < accepting:
                return False  # the peer is connecting to us: an offer would make a second link
            del self._accepting[peer_key]
        backoff = self._backoff.get(peer_key)
        return backoff is None or now >= backoff[0]

    def make_offer(self, peer_key: bytes, now: float) -> bytes | None:
        """A LINK_OFFER payload for the peer, or None when no offer is due."""
        if not self.wants_link(peer_key, now):
            return None
        if len(self._offers) >= MAX_PENDING:
            self._expire_offers(now)
            if len(self._offers) >= MAX_PENDING:
                return None
        offer = LinkOffer(self._random(TOKEN_SIZE), self._random(KEY_SIZE), self._random(KEY_SIZE))
        self._offers[offer.token] = _Offer(peer_key, offer, now + self._seconds(OFFER_TIMEOUT))
        self._offer_by_peer[peer_key] = offer.token
        return encode_offer(offer)

    def _expire_attempts(self, peer_key: bytes, now: float) -> None:
        """Drop an unanswered offer or a stuck connect; the backoff starts now."""
        token = self._offer_by_peer.get(peer_key)
        if token is not None and now >= self._offers[token].expires:
            self._drop_offer(token)
            self._fail(peer_key, now)
            return
        deadline = self._connecting.get(peer_key)
        if deadline is not None and now >= deadline:
            del self._connecting[peer_key]
            self._fail(peer_key, now)

    def _expire_offers(self, now: float) -> None:
        """Give up every unanswered offer past its time, also to peers no longer asked about."""
        for token, pending in [(t, o) for t, o in self._offers.items() if now >= o.expires]:
            self._drop_offer(token)
            self._fail(pending.peer_key, now)

    def _drop_offer(self, token: bytes) -> None:
        pending = self._offers.pop(token, None)
        if pending is not None and self._offer_by_peer.get(pending.peer_key) == token:
            del self._offer_by_peer[pending.peer_key]

    def on_accept(self, peer_key: bytes, accept: LinkAccept, now: float) -> ConnectOrder | None:
        """The peer took our offer: the connection to make, or None for a stale answer."""
        pending = self._offers.get(accept.token)
        if pending is None or pending.peer_key != peer_key:
            return None
        self._drop_offer(accept.token)
        self._connecting[peer_key] = now + self._seconds(CONNECT_TIMEOUT + OFFER_TIMEOUT)
        return ConnectOrder(
            peer_key,
            accept.token,
            accept.port,
            send_key=pending.offer.to_acceptor,
            receive_key=pending.offer.to_connector,
        )

    def on_decline(self, peer_key: bytes, decline: LinkDecline, now: float) -> None:
        pending = self._offers.get(decline.token)
        if pending is None or pending.peer_key != peer_key:
            return
        self._drop_offer(decline.token)
        if decline.reason == DeclineReason.DISABLED:
            self._backoff[peer_key] = (now + self._seconds(BACKOFF_MAX), BACKOFF_MAX)
        elif decline.reason == DeclineReason.BUSY:
            self._fail(peer_key, now)
        # CROSSED: the peer's own offer is on its way; nothing to wait for.

    # --- accepting ------------------------------------------------------------------

    def on_offer(self, peer_key: bytes, peer_id: bytes, offer: LinkOffer, now: float) -> bytes:
        """The answer to a peer's offer: LINK_ACCEPT (the token is then claimable) or DECLINE."""
        if self.port is None:
            return encode_decline(LinkDecline(offer.token, DeclineReason.DISABLED))
        if peer_key in self._connecting:  # we are connecting on an offer it accepted
            return encode_decline(LinkDecline(offer.token, DeclineReason.CROSSED))
        ours = self._offer_by_peer.get(peer_key)
        if ours is not None:
            if self.own_id < peer_id:
                return encode_decline(LinkDecline(offer.token, DeclineReason.CROSSED))
            self._drop_offer(ours)  # theirs goes ahead; ours would be declined
        self._expire_accepted(now)
        if offer.token in self._accepted:
            return encode_decline(LinkDecline(offer.token, DeclineReason.BUSY))
        for stale in [t for t, a in self._accepted.items() if a.peer_key == peer_key]:
            del self._accepted[stale]  # one waiting token per peer: a newer offer replaces it
        if len(self._accepted) >= MAX_PENDING:
            return encode_decline(LinkDecline(offer.token, DeclineReason.BUSY))
        expires = now + self._seconds(ACCEPT_TIMEOUT)
        self._accepted[offer.token] = AcceptedToken(
            peer_key, send_key=offer.to_connector, receive_key=offer.to_acceptor, expires=expires
        )
        self._accepting[peer_key] = expires
        return encode_accept(LinkAccept(offer.token, self.port))

    def claim(self, token: bytes, now: float) -> AcceptedToken | None:
        """The binding of a token presented on an inbound connection; each token works once."""
        accepted = self._accepted.pop(token, None)
        if accepted is None:
            return None
        self._accepting.pop(accepted.peer_key, None)
        if now >= accepted.expires:
            return None
        return accepted

    def _expire_accepted(self, now: float) -> None:
        for token in [t for t, a in self._accepted.items() if now >= a.expires]:
            del self._accepted[token]

    # --- the runtime's reports ---------------------------------------------------------

    def link_up(self, peer_key: bytes, now: float) -> None:
        """A link is up: no wait before the next offer, but the interval is kept (see link_down)."""
        self._connecting.pop(peer_key, None)
        backoff = self._backoff.get(peer_key)
        if backoff is not None:
            self._backoff[peer_key] = (now, backoff[1])
        self._up_since[peer_key] = now

    def link_down(self, peer_key: bytes, now: float, *, failed: bool) -> None:
        """The peer's current link closed (`failed`: an error, not a planned retirement).

        A link that failed before it was due for refresh keeps doubling the
        backoff (a path that lets TCP connect but not last, say); one that
        lived longer starts again from BACKOFF_FIRST.
        """
        since = self._up_since.pop(peer_key, None)
        if not failed:
            return
        if since is not None and now - since >= self._seconds(LINK_REFRESH):
            self._backoff.pop(peer_key, None)
        self._fail(peer_key, now)

    def connect_failed(self, peer_key: bytes, now: float) -> None:
        self._connecting.pop(peer_key, None)
        self._fail(peer_key, now)

    def forget(self, peer_key: bytes) -> None:
        """The peer is gone from the mesh: drop everything about it."""
        token = self._offer_by_peer.get(peer_key)
        if token is not None:
            self._drop_offer(token)
        self._connecting.pop(peer_key, None)
        self._up_since.pop(peer_key, None)
        self._backoff.pop(peer_key, None)
        self._accepting.pop(peer_key, None)
        for stale in [t for t, a in self._accepted.items() if a.peer_key == peer_key]:
            del self._accepted[stale]

    def _fail(self, peer_key: bytes, now: float) -> None:
        _, interval = self._backoff.get(peer_key, (0.0, BACKOFF_FIRST / 2))
        interval = min(interval * 2, BACKOFF_MAX)
        self._backoff[peer_key] = (now + self._seconds(interval), interval)

    def connect_timeout(self) -> float:
        """Seconds the runtime gives a connect and its preamble (scaled like the rest)."""
        return self._seconds(CONNECT_TIMEOUT)

    def max_age(self) -> float:
        """Seconds after which the runtime closes a link, replaced or not."""
        return self._seconds(LINK_MAX_AGE)
