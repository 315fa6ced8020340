"""The stream-link planner: who offers, who connects, with which keys, and when to retry."""

from __future__ import annotations

import pytest

from gossipmesh.links import planner as planner_module
from gossipmesh.links.messages import (
    DeclineReason,
    LinkAccept,
    LinkDecline,
    LinkOffer,
    decode_link_message,
    encode_accept,
    encode_decline,
)
from gossipmesh.links.planner import (
    ACCEPT_TIMEOUT,
    BACKOFF_FIRST,
    BACKOFF_MAX,
    CONNECT_TIMEOUT,
    LINK_MAX_AGE,
    LINK_REFRESH,
    MAX_PENDING,
    OFFER_TIMEOUT,
    ConnectOrder,
    LinkPlanner,
)
from gossipmesh.wire import PayloadKind

ID_LOW = b"\x01" * 32
ID_HIGH = b"\x02" * 32
KEY_A = b"A" * 32
"""Peer keys (X25519) as each planner knows the other."""
KEY_B = b"B" * 32
T0 = 1000.0


class Deterministic:
    """An injected random source: distinct, reproducible bytes on every call."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.calls = 0

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        stamp = bytes([self.seed]) + self.calls.to_bytes(4, "big")
        return (stamp * (size // len(stamp) + 1))[:size]


def make_planner(
    own_id: bytes = ID_LOW, *, port: int | None = 7000, scale: float = 1.0, seed: int = 1
) -> LinkPlanner:
    return LinkPlanner(own_id, port=port, random=Deterministic(seed), scale=scale)


def offer_from(payload: bytes | None) -> LinkOffer:
    assert payload is not None
    message = decode_link_message(payload)
    assert isinstance(message, LinkOffer)
    return message


def accept_from(payload: bytes) -> LinkAccept:
    message = decode_link_message(payload)
    assert isinstance(message, LinkAccept), message
    return message


def decline_from(payload: bytes) -> LinkDecline:
    message = decode_link_message(payload)
    assert isinstance(message, LinkDecline), message
    return message


def negotiate(
    connector: LinkPlanner, acceptor: LinkPlanner, now: float = T0
) -> tuple[ConnectOrder, LinkOffer]:
    """A offers (KEY_B is the acceptor's key at A), B accepts (KEY_A is A's key at B)."""
    offer = offer_from(connector.make_offer(KEY_B, now))
    answer = acceptor.on_offer(KEY_A, connector.own_id, offer, now)
    order = connector.on_accept(KEY_B, accept_from(answer), now)
    assert order is not None
    return order, offer


# --- offer, accept, connect ------------------------------------------------------------


def test_offer_accept_gives_an_order_with_the_keys_crossed() -> None:
    a, b = make_planner(ID_LOW, seed=1), make_planner(ID_HIGH, port=7001, seed=2)
    order, offer = negotiate(a, b)
    assert order.peer_key == KEY_B
    assert order.token == offer.token
    assert order.port == 7001
    accepted = b.claim(order.token, T0 + 1)
    assert accepted is not None
    assert accepted.peer_key == KEY_A
    # What the connector seals, the acceptor opens, and the other way round.
    assert order.send_key == accepted.receive_key == offer.to_acceptor
    assert order.receive_key == accepted.send_key == offer.to_connector
    assert len({order.token, order.send_key, order.receive_key}) == 3


def test_offer_draws_token_and_keys_from_the_injected_source() -> None:
    random = Deterministic(9)
    planner = LinkPlanner(ID_LOW, port=7000, random=random)
    offer = offer_from(planner.make_offer(KEY_B, T0))
    assert random.calls == 3
    assert offer.token == Deterministic(9)(16)
    assert len(offer.token) == 16 and len(offer.to_acceptor) == len(offer.to_connector) == 32


def test_a_token_works_once() -> None:
    a, b = make_planner(), make_planner(ID_HIGH)
    order, _ = negotiate(a, b)
    assert b.claim(order.token, T0) is not None
    assert b.claim(order.token, T0) is None


def test_an_unknown_token_is_not_claimable() -> None:
    assert make_planner().claim(bytes(16), T0) is None


def test_a_token_expires_after_accept_timeout() -> None:
    a, b = make_planner(), make_planner(ID_HIGH)
    order, _ = negotiate(a, b)
    assert b.claim(order.token, T0 + ACCEPT_TIMEOUT) is None
    a2, b2 = make_planner(), make_planner(ID_HIGH)
    order2, _ = negotiate(a2, b2)
    assert b2.claim(order2.token, T0 + ACCEPT_TIMEOUT - 0.001) is not None


def test_an_accept_counts_once_and_only_from_the_offered_peer() -> None:
    a, b = make_planner(), make_planner(ID_HIGH)
    offer = offer_from(a.make_offer(KEY_B, T0))
    accept = accept_from(b.on_offer(KEY_A, ID_LOW, offer, T0))
    assert a.on_accept(b"X" * 32, accept, T0) is None  # someone else echoing the token
    assert a.on_accept(KEY_B, LinkAccept(bytes(16), 7001), T0) is None
    assert a.on_accept(KEY_B, accept, T0) is not None
    assert a.on_accept(KEY_B, accept, T0) is None


def test_a_planner_without_port_declines_and_never_offers() -> None:
    off = make_planner(port=None)
    assert not off.enabled
    offer = offer_from(make_planner(ID_HIGH).make_offer(KEY_A, T0))
    decline = decline_from(off.on_offer(KEY_B, ID_HIGH, offer, T0))
    assert decline == LinkDecline(offer.token, DeclineReason.DISABLED)
    assert off.claim(offer.token, T0) is None
    assert not off.wants_link(KEY_B, T0)
    assert off.make_offer(KEY_B, T0) is None


# --- one attempt at a time -------------------------------------------------------------------


def test_no_second_offer_while_one_is_pending() -> None:
    a = make_planner()
    assert a.make_offer(KEY_B, T0) is not None
    assert not a.wants_link(KEY_B, T0 + 1)
    assert a.make_offer(KEY_B, T0 + OFFER_TIMEOUT - 0.001) is None
    assert a.wants_link(KEY_A, T0 + 1)  # another peer is not held up


def test_no_offer_while_connecting_or_while_the_link_is_young() -> None:
    a, b = make_planner(), make_planner(ID_HIGH)
    negotiate(a, b)
    assert a.make_offer(KEY_B, T0 + 1) is None
    a.link_up(KEY_B, T0 + 2)
    assert a.make_offer(KEY_B, T0 + 2 + LINK_REFRESH - 0.001) is None
    refresh = a.make_offer(KEY_B, T0 + 2 + LINK_REFRESH)
    assert refresh is not None  # keys due for replacement
    assert a.make_offer(KEY_B, T0 + 3 + LINK_REFRESH) is None


def test_an_unanswered_offer_expires_into_backoff() -> None:
    a = make_planner()
    offer = offer_from(a.make_offer(KEY_B, T0))
    expired = T0 + OFFER_TIMEOUT
    assert not a.wants_link(KEY_B, expired)
    assert a.make_offer(KEY_B, expired + BACKOFF_FIRST - 0.001) is None
    assert a.make_offer(KEY_B, expired + BACKOFF_FIRST) is not None
    # A late answer to the expired offer is stale.
    assert a.on_accept(KEY_B, LinkAccept(offer.token, 7001), expired + BACKOFF_FIRST) is None


def test_a_stuck_connect_expires_into_backoff() -> None:
    a, b = make_planner(), make_planner(ID_HIGH)
    negotiate(a, b)
    deadline = T0 + CONNECT_TIMEOUT + OFFER_TIMEOUT
    assert a.make_offer(KEY_B, deadline - 0.001) is None
    assert not a.wants_link(KEY_B, deadline)
    assert a.make_offer(KEY_B, deadline + BACKOFF_FIRST - 0.001) is None
    assert a.make_offer(KEY_B, deadline + BACKOFF_FIRST) is not None


def test_a_link_closed_in_order_allows_a_new_offer_at_once() -> None:
    a, b = make_planner(), make_planner(ID_HIGH)
    negotiate(a, b)
    a.link_up(KEY_B, T0 + 1)
    a.link_down(KEY_B, T0 + 2, failed=False)
    assert a.make_offer(KEY_B, T0 + 2) is not None


def test_max_age_is_link_max_age() -> None:
    assert make_planner().max_age() == LINK_MAX_AGE


# --- crossed offers ---------------------------------------------------------------------------


@pytest.mark.parametrize("a_id, b_id", [(ID_LOW, ID_HIGH), (ID_HIGH, ID_LOW)])
@pytest.mark.parametrize("a_hears_first", [True, False])
def test_crossed_offers_make_exactly_one_link(
    a_id: bytes, b_id: bytes, a_hears_first: bool
) -> None:
    a, b = make_planner(a_id, port=7000, seed=1), make_planner(b_id, port=7001, seed=2)
    offer_a = offer_from(a.make_offer(KEY_B, T0))
    offer_b = offer_from(b.make_offer(KEY_A, T0))
    if a_hears_first:
        answer_to_b = a.on_offer(KEY_B, b_id, offer_b, T0)
        answer_to_a = b.on_offer(KEY_A, a_id, offer_a, T0)
    else:
        answer_to_a = b.on_offer(KEY_A, a_id, offer_a, T0)
        answer_to_b = a.on_offer(KEY_B, b_id, offer_b, T0)

    orders: list[tuple[str, ConnectOrder]] = []
    for name, planner, peer, answer in (
        ("a", a, KEY_B, answer_to_a),
        ("b", b, KEY_A, answer_to_b),
    ):
        message = decode_link_message(answer)
        if isinstance(message, LinkAccept):
            order = planner.on_accept(peer, message, T0)
            if order is not None:
                orders.append((name, order))
        else:
            assert isinstance(message, LinkDecline)
            assert message.reason == DeclineReason.CROSSED
            planner.on_decline(peer, message, T0)

    # The lower node id's offer goes ahead, on both sides.
    assert len(orders) == 1
    name, order = orders[0]
    connector, acceptor = (a, b) if name == "a" else (b, a)
    assert connector.own_id == ID_LOW
    assert order.token == (offer_a if name == "a" else offer_b).token
    accepted = acceptor.claim(order.token, T0)
    assert accepted is not None
    assert accepted.receive_key == order.send_key
    # The losing offer's token was never accepted anywhere.
    loser = offer_b if name == "a" else offer_a
    assert a.claim(loser.token, T0) is None and b.claim(loser.token, T0) is None
    # A declined-as-crossed offer does not back off: nothing failed.
    connector.link_up(order.peer_key, T0)
    acceptor.link_up(accepted.peer_key, T0)
    assert not a.wants_link(KEY_B, T0) and not b.wants_link(KEY_A, T0)


def test_the_acceptor_does_not_offer_while_the_peer_connects() -> None:
    a, b = make_planner(ID_LOW), make_planner(ID_HIGH, port=7001)
    order, _ = negotiate(a, b)
    assert not b.wants_link(KEY_A, T0)
    assert b.make_offer(KEY_A, T0 + ACCEPT_TIMEOUT - 0.001) is None
    assert b.claim(order.token, T0 + 1) is not None
    b.link_up(KEY_A, T0 + 1)
    assert not b.wants_link(KEY_A, T0 + 2)


def test_the_acceptor_offers_itself_once_the_accepted_token_expires() -> None:
    a, b = make_planner(ID_LOW), make_planner(ID_HIGH, port=7001)
    order, _ = negotiate(a, b)
    assert b.make_offer(KEY_A, T0 + ACCEPT_TIMEOUT) is not None  # no backoff: nothing it did failed
    assert b.claim(order.token, T0 + ACCEPT_TIMEOUT) is None


def test_a_claim_that_came_too_late_ends_the_wait() -> None:
    a, b = make_planner(ID_LOW), make_planner(ID_HIGH, port=7001)
    order, _ = negotiate(a, b)
    assert b.claim(order.token, T0 + ACCEPT_TIMEOUT + 1) is None
    assert b.wants_link(KEY_A, T0 + ACCEPT_TIMEOUT + 1)


class Pair:
    """Two planners exchanging messages with one step of latency, both with bulk traffic."""

    def __init__(self) -> None:
        self.a = make_planner(ID_LOW, port=7000, seed=1)
        self.b = make_planner(ID_HIGH, port=7001, seed=2)
        self.keys = {"a": KEY_A, "b": KEY_B}
        self.ids = {"a": ID_LOW, "b": ID_HIGH}
        self.planners = {"a": self.a, "b": self.b}
        self.in_flight: list[tuple[str, bytes]] = []  # (recipient, payload)
        self.connects: list[tuple[int, str, ConnectOrder]] = []  # (due step, connector, order)
        self.orders: list[tuple[str, ConnectOrder]] = []

    def step(self, index: int, now: float) -> None:
        delivering, self.in_flight = self.in_flight, []
        for recipient, payload in delivering:
            self.deliver(index, recipient, payload, now)
        for due, connector, order in [c for c in self.connects if c[0] == index]:
            self.connects.remove((due, connector, order))
            acceptor = "b" if connector == "a" else "a"
            accepted = self.planners[acceptor].claim(order.token, now)
            assert accepted is not None
            self.planners[connector].link_up(order.peer_key, now)
            self.planners[acceptor].link_up(accepted.peer_key, now)
        for name, planner in self.planners.items():
            other = "b" if name == "a" else "a"
            offer = planner.make_offer(self.keys[other], now)  # every step has bulk traffic
            if offer is not None:
                self.in_flight.append((other, offer))

    def deliver(self, index: int, recipient: str, payload: bytes, now: float) -> None:
        planner = self.planners[recipient]
        sender = "b" if recipient == "a" else "a"
        message = decode_link_message(payload)
        if isinstance(message, LinkOffer):
            answer = planner.on_offer(self.keys[sender], self.ids[sender], message, now)
            self.in_flight.append((sender, answer))
        elif isinstance(message, LinkAccept):
            order = planner.on_accept(self.keys[sender], message, now)
            if order is not None:
                self.orders.append((recipient, order))
                self.connects.append((index + 2, recipient, order))
        else:
            planner.on_decline(self.keys[sender], message, now)


@pytest.mark.parametrize("b_starts_late", [0, 1, 2, 3])
def test_bulk_traffic_both_ways_makes_one_link_until_refresh(b_starts_late: int) -> None:
    """Both nodes want a link on every step; only one TCP connection may come of it.

    The acceptor must hold back its own offer while the connection it accepted
    is on its way, or both nodes connect (twice the sockets, a needless replacement).
    """
    pair = Pair()
    for index in range(200):
        now = T0 + index * 0.01
        if index < b_starts_late:
            payload = pair.a.make_offer(KEY_B, now)
            if payload is not None:
                pair.in_flight.append(("b", payload))
            continue
        pair.step(index, now)
    assert len(pair.orders) == 1, pair.orders
    assert not pair.connects


# --- declines and backoff -----------------------------------------------------------------


def test_declined_disabled_backs_off_the_longest() -> None:
    a = make_planner()
    offer = offer_from(a.make_offer(KEY_B, T0))
    a.on_decline(KEY_B, LinkDecline(offer.token, DeclineReason.DISABLED), T0 + 1)
    assert a.make_offer(KEY_B, T0 + 1 + BACKOFF_MAX - 0.001) is None
    assert a.make_offer(KEY_B, T0 + 1 + BACKOFF_MAX) is not None


def test_a_decline_for_someone_elses_offer_is_ignored() -> None:
    a = make_planner()
    offer = offer_from(a.make_offer(KEY_B, T0))
    a.on_decline(b"X" * 32, LinkDecline(offer.token, DeclineReason.DISABLED), T0)
    assert not a.wants_link(KEY_B, T0)  # still pending, not backed off
    accept = LinkAccept(offer.token, 7001)
    assert a.on_accept(KEY_B, accept, T0) is not None


def test_declined_crossed_does_not_back_off() -> None:
    a = make_planner()
    offer = offer_from(a.make_offer(KEY_B, T0))
    a.on_decline(KEY_B, LinkDecline(offer.token, DeclineReason.CROSSED), T0)
    assert a.wants_link(KEY_B, T0)


def busy(planner: LinkPlanner, now: float) -> None:
    offer = offer_from(planner.make_offer(KEY_B, now))
    planner.on_decline(KEY_B, LinkDecline(offer.token, DeclineReason.BUSY), now)


def failed_connect(planner: LinkPlanner, now: float) -> None:
    offer = offer_from(planner.make_offer(KEY_B, now))
    assert planner.on_accept(KEY_B, LinkAccept(offer.token, 7001), now) is not None
    planner.connect_failed(KEY_B, now)


def failed_link(planner: LinkPlanner, now: float) -> None:
    offer = offer_from(planner.make_offer(KEY_B, now))
    assert planner.on_accept(KEY_B, LinkAccept(offer.token, 7001), now) is not None
    planner.link_up(KEY_B, now)
    planner.link_down(KEY_B, now, failed=True)


EXPECTED_BACKOFFS = [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0, 600.0]


@pytest.mark.parametrize("failure", [busy, failed_connect])
def test_failures_back_off_doubling_up_to_the_maximum(failure: object) -> None:
    assert callable(failure)
    a = make_planner()
    now = T0
    intervals = []
    for _ in EXPECTED_BACKOFFS:
        failure(a, now)
        wait = next(
            step
            for step in (10.0 * 2**n for n in range(8))
            if a.wants_link(KEY_B, now + min(step, BACKOFF_MAX))
        )
        wait = min(wait, BACKOFF_MAX)
        assert not a.wants_link(KEY_B, now + wait - 0.001)
        intervals.append(wait)
        now += wait
    assert intervals == EXPECTED_BACKOFFS
    assert EXPECTED_BACKOFFS[0] == BACKOFF_FIRST


def test_a_link_that_keeps_failing_soon_after_coming_up_backs_off_doubling() -> None:
    a = make_planner()
    failed_link(a, T0)
    assert not a.wants_link(KEY_B, T0 + BACKOFF_FIRST - 0.001)
    assert a.wants_link(KEY_B, T0 + BACKOFF_FIRST)
    # It came up and failed at once again: the interval doubles, as for failed connects.
    failed_link(a, T0 + BACKOFF_FIRST)
    assert not a.wants_link(KEY_B, T0 + 3 * BACKOFF_FIRST - 0.001)
    assert a.wants_link(KEY_B, T0 + 3 * BACKOFF_FIRST)


def test_a_link_that_lived_past_its_refresh_resets_the_backoff() -> None:
    a = make_planner()
    for index in range(4):
        busy(a, T0 + 1000 * index)
    now = T0 + 5000
    failed_connect(a, now)
    negotiate(a, make_planner(ID_HIGH), now + BACKOFF_MAX)
    up = now + BACKOFF_MAX
    a.link_up(KEY_B, up)
    assert a.wants_link(KEY_B, up + LINK_REFRESH)  # up: no wait before its refresh offer
    a.link_down(KEY_B, up + LINK_REFRESH, failed=True)
    assert not a.wants_link(KEY_B, up + LINK_REFRESH + BACKOFF_FIRST - 0.001)
    assert a.wants_link(KEY_B, up + LINK_REFRESH + BACKOFF_FIRST)


def test_a_link_that_failed_young_keeps_the_longer_backoff() -> None:
    a = make_planner()
    for index in range(4):
        busy(a, T0 + 1000 * index)  # interval now 80 s
    now = T0 + 5000
    negotiate(a, make_planner(ID_HIGH), now)
    a.link_up(KEY_B, now)
    a.link_down(KEY_B, now + 1, failed=True)
    assert not a.wants_link(KEY_B, now + 1 + 160.0 - 0.001)
    assert a.wants_link(KEY_B, now + 1 + 160.0)


def test_after_disabled_a_failure_stays_at_the_maximum() -> None:
    a = make_planner()
    offer = offer_from(a.make_offer(KEY_B, T0))
    a.on_decline(KEY_B, LinkDecline(offer.token, DeclineReason.DISABLED), T0)
    busy(a, T0 + BACKOFF_MAX)
    assert not a.wants_link(KEY_B, T0 + 2 * BACKOFF_MAX - 0.001)
    assert a.wants_link(KEY_B, T0 + 2 * BACKOFF_MAX)


# --- bounds ----------------------------------------------------------------------------------


def peer(index: int) -> bytes:
    return index.to_bytes(32, "big")


def test_at_most_max_pending_offers() -> None:
    a = make_planner()
    offers = [offer_from(a.make_offer(peer(i), T0)) for i in range(MAX_PENDING)]
    assert a.make_offer(peer(MAX_PENDING), T0) is None
    a.on_decline(peer(0), LinkDecline(offers[0].token, DeclineReason.CROSSED), T0)
    assert a.make_offer(peer(MAX_PENDING), T0) is not None


def test_unanswered_offers_stop_counting_once_they_expire() -> None:
    """Peers that predate links never answer; their offers must not block others for good.

    The traffic that caused each offer may have stopped, so nothing asks about
    those peers again: the bound itself has to let expired offers go.
    """
    a = make_planner()
    for i in range(MAX_PENDING):
        assert a.make_offer(peer(i), T0) is not None
    assert a.make_offer(peer(MAX_PENDING), T0 + OFFER_TIMEOUT - 0.001) is None
    assert a.make_offer(peer(MAX_PENDING), T0 + OFFER_TIMEOUT) is not None
    # The expired ones back off as if each had been asked about.
    assert not a.wants_link(peer(0), T0 + OFFER_TIMEOUT)
    assert a.wants_link(peer(0), T0 + OFFER_TIMEOUT + BACKOFF_FIRST)


def test_at_most_max_pending_accepted_tokens() -> None:
    b = make_planner(ID_HIGH)
    tokens = []
    for i in range(MAX_PENDING):
        offer = LinkOffer(i.to_bytes(16, "big"), b"k" * 32, b"K" * 32)
        tokens.append(accept_from(b.on_offer(peer(i), ID_LOW, offer, T0)).token)
    late = LinkOffer(b"\xff" * 16, b"k" * 32, b"K" * 32)
    decline = decline_from(b.on_offer(peer(MAX_PENDING), ID_LOW, late, T0))
    assert decline == LinkDecline(late.token, DeclineReason.BUSY)
    assert b.claim(tokens[0], T0) is not None  # a claim frees a place
    accept_from(b.on_offer(peer(MAX_PENDING), ID_LOW, late, T0))
    # Expired tokens free theirs too.
    later = LinkOffer(b"\xfe" * 16, b"k" * 32, b"K" * 32)
    decline_from(b.on_offer(peer(MAX_PENDING + 1), ID_LOW, later, T0))
    accept_from(b.on_offer(peer(MAX_PENDING + 1), ID_LOW, later, T0 + ACCEPT_TIMEOUT))


def test_a_token_offered_twice_is_declined() -> None:
    b = make_planner(ID_HIGH)
    offer = LinkOffer(b"t" * 16, b"k" * 32, b"K" * 32)
    accept_from(b.on_offer(KEY_A, ID_LOW, offer, T0))
    other = LinkOffer(b"t" * 16, b"x" * 32, b"X" * 32)
    assert decline_from(b.on_offer(KEY_A, ID_LOW, other, T0)).reason == DeclineReason.BUSY
    accepted = b.claim(offer.token, T0)
    assert accepted is not None and accepted.receive_key == offer.to_acceptor


# --- forget ------------------------------------------------------------------------------------


def test_forget_drops_everything_about_the_peer() -> None:
    a = make_planner()
    # Backoff, then a pending offer.
    busy(a, T0)
    a.forget(KEY_B)
    assert a.make_offer(KEY_B, T0) is not None
    a.forget(KEY_B)
    assert a.make_offer(KEY_B, T0) is not None
    # Connecting.
    a.forget(KEY_B)
    negotiate(a, make_planner(ID_HIGH), T0)
    a.forget(KEY_B)
    assert a.wants_link(KEY_B, T0)
    # Up and young.
    a.link_up(KEY_B, T0)
    a.forget(KEY_B)
    assert a.wants_link(KEY_B, T0)
    # Accepted tokens from it, and only from it.
    offer_b = LinkOffer(b"b" * 16, b"k" * 32, b"K" * 32)
    offer_c = LinkOffer(b"c" * 16, b"k" * 32, b"K" * 32)
    accept_from(a.on_offer(KEY_B, ID_HIGH, offer_b, T0))
    accept_from(a.on_offer(b"C" * 32, ID_HIGH, offer_c, T0))
    assert not a.wants_link(KEY_B, T0)  # B is connecting to us
    a.forget(KEY_B)
    assert a.wants_link(KEY_B, T0)
    assert a.claim(offer_b.token, T0) is None
    assert a.claim(offer_c.token, T0) is not None


def test_forget_leaves_other_peers_alone() -> None:
    a = make_planner()
    a.make_offer(KEY_A, T0)
    busy(a, T0)
    a.forget(KEY_B)
    assert not a.wants_link(KEY_A, T0)


def test_a_forgotten_offer_is_stale() -> None:
    a = make_planner()
    offer = offer_from(a.make_offer(KEY_B, T0))
    a.forget(KEY_B)
    assert a.on_accept(KEY_B, LinkAccept(offer.token, 7001), T0) is None


# --- timer scale -----------------------------------------------------------------------------

SCALE = 10.0


def test_scale_divides_the_offer_timeout_and_backoff() -> None:
    a = make_planner(scale=SCALE)
    a.make_offer(KEY_B, T0)
    assert a.make_offer(KEY_B, T0 + OFFER_TIMEOUT / SCALE - 0.001) is None
    expired = T0 + OFFER_TIMEOUT / SCALE
    assert not a.wants_link(KEY_B, expired)
    assert not a.wants_link(KEY_B, expired + BACKOFF_FIRST / SCALE - 0.001)
    assert a.wants_link(KEY_B, expired + BACKOFF_FIRST / SCALE)


def test_scale_divides_the_accept_timeout() -> None:
    b = make_planner(ID_HIGH, scale=SCALE)
    offer = LinkOffer(b"t" * 16, b"k" * 32, b"K" * 32)
    accept_from(b.on_offer(KEY_A, ID_LOW, offer, T0))
    assert b.claim(offer.token, T0 + ACCEPT_TIMEOUT / SCALE) is None
    b2 = make_planner(ID_HIGH, scale=SCALE)
    accept_from(b2.on_offer(KEY_A, ID_LOW, offer, T0))
    assert b2.claim(offer.token, T0 + ACCEPT_TIMEOUT / SCALE - 0.001) is not None


def test_scale_divides_the_connect_deadline() -> None:
    a = make_planner(scale=SCALE)
    negotiate(a, make_planner(ID_HIGH), T0)
    deadline = T0 + (CONNECT_TIMEOUT + OFFER_TIMEOUT) / SCALE
    assert a.make_offer(KEY_B, deadline - 0.001) is None
    assert not a.wants_link(KEY_B, deadline)
    assert a.wants_link(KEY_B, deadline + BACKOFF_FIRST / SCALE)


def test_scale_divides_refresh_max_age_and_the_longest_backoff() -> None:
    a = make_planner(scale=SCALE)
    a.link_up(KEY_B, T0)
    assert not a.wants_link(KEY_B, T0 + LINK_REFRESH / SCALE - 0.001)
    assert a.wants_link(KEY_B, T0 + LINK_REFRESH / SCALE)
    assert a.max_age() == LINK_MAX_AGE / SCALE
    assert a.connect_timeout() == CONNECT_TIMEOUT / SCALE
    assert make_planner().connect_timeout() == CONNECT_TIMEOUT
    offer = offer_from(a.make_offer(KEY_B, T0 + LINK_REFRESH / SCALE))
    now = T0 + LINK_REFRESH / SCALE
    a.on_decline(KEY_B, LinkDecline(offer.token, DeclineReason.DISABLED), now)
    assert not a.wants_link(KEY_B, now + BACKOFF_MAX / SCALE - 0.001)
    assert a.wants_link(KEY_B, now + BACKOFF_MAX / SCALE)


def test_scale_divides_every_doubled_backoff() -> None:
    a = make_planner(scale=SCALE)
    now = T0
    for interval in EXPECTED_BACKOFFS:
        busy(a, now)
        assert not a.wants_link(KEY_B, now + interval / SCALE - 0.001)
        assert a.wants_link(KEY_B, now + interval / SCALE)
        now += interval / SCALE


def test_every_period_is_a_module_constant() -> None:
    """The scale tests above cover each period the planner defines."""
    periods = {
        name
        for name, value in vars(planner_module).items()
        if name.isupper() and isinstance(value, float)
    }
    assert periods == {
        "OFFER_TIMEOUT",
        "ACCEPT_TIMEOUT",
        "CONNECT_TIMEOUT",
        "LINK_REFRESH",
        "LINK_MAX_AGE",
        "BACKOFF_FIRST",
        "BACKOFF_MAX",
    }


def test_encoded_answers_are_the_planners_own() -> None:
    """on_offer answers with exactly the encoders' bytes (the node sends them as they are)."""
    b = make_planner(ID_HIGH, port=7001)
    offer = LinkOffer(b"t" * 16, b"k" * 32, b"K" * 32)
    assert b.on_offer(KEY_A, ID_LOW, offer, T0) == encode_accept(LinkAccept(offer.token, 7001))
    assert b.on_offer(KEY_A, ID_LOW, offer, T0) == encode_decline(
        LinkDecline(offer.token, DeclineReason.BUSY)
    )


def test_a_newer_offer_from_a_peer_replaces_its_waiting_token() -> None:
    """One peer cannot fill the accepted-token table (and starve the others) by offering again."""
    b = make_planner(ID_HIGH)
    offers = [offer_from(make_planner(ID_LOW, seed=n).make_offer(KEY_B, T0)) for n in range(3)]
    for offer in offers:
        assert b.on_offer(KEY_A, ID_LOW, offer, T0)[0] == PayloadKind.LINK_ACCEPT
    assert b.claim(offers[0].token, T0) is None
    assert b.claim(offers[1].token, T0) is None
    assert b.claim(offers[2].token, T0) is not None
