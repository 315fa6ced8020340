"""Control payloads inside sessions: which part of the node each kind goes to.

A decrypted payload whose first byte is not an IP version is a control
message (`wire.PayloadKind`). Routing takes gossip, keepalives and relay
envelopes; record exchange, rendezvous, stream-link negotiation and the
mesh echo are the node's own. Malformed ones are counted and dropped.

A member gone bad can send any number of the node's own kinds (records,
requests, digests, documents, echoes); each peer gets a token bucket of
CONTROL_PER_SECOND with a burst of CONTROL_BURST (a newcomer's whole
record exchange fits in the burst), and what is over it is dropped and
counted (`control_rate_limited`). Routing's kinds are left to routing,
which drops floods by their sequence numbers.
"""

from __future__ import annotations

from gossipmesh.node.documents import DocumentSync, decode_digests
from gossipmesh.node.events import EchoAnswered
from gossipmesh.node.links import NodeLinks
from gossipmesh.node.messages import (
    MalformedNodeMessage,
    decode_digest,
    decode_echo,
    decode_record_request,
    decode_records,
    encode_echo,
)
from gossipmesh.node.neighbours import PRUNE_MESSAGE, MalformedOffer, decode_offer
from gossipmesh.node.options import NodeCounters
from gossipmesh.node.outbox import Outbox
from gossipmesh.node.paths import RENDEZVOUS_REQUEST, PathSelector
from gossipmesh.node.record_sync import RecordSync
from gossipmesh.routing.core import RoutingCore
from gossipmesh.session.manager import SessionManager
from gossipmesh.session.ratelimit import SourceRateLimiter
from gossipmesh.wire import PayloadKind

_ROUTING_KINDS = frozenset(
    (PayloadKind.GOSSIP, PayloadKind.PING, PayloadKind.PONG, PayloadKind.RELAY)
)
_LINK_KINDS = frozenset((PayloadKind.LINK_OFFER, PayloadKind.LINK_ACCEPT, PayloadKind.LINK_DECLINE))
CONTROL_PER_SECOND = 500.0
CONTROL_BURST = 2000.0


class ControlDispatch:
    """Hands each control payload from a node's session to the part that owns its kind."""

    def __init__(
        self,
        sessions: SessionManager,
        routing: RoutingCore,
        records: RecordSync,
        paths: PathSelector,
        links: NodeLinks,
        documents: DocumentSync,
        outbox: Outbox,
        counters: NodeCounters,
        wall_offset: float,
    ) -> None:
        self._sessions = sessions
        self._routing = routing
        self._records = records
        self._paths = paths
        self._links = links
        self._documents = documents
        self._outbox = outbox
        self._counters = counters
        self._wall_offset = wall_offset
        self._limiter = SourceRateLimiter(CONTROL_PER_SECOND, CONTROL_BURST)
        self._echoes: set[int] = set()
        """Nonces of our mesh pings still waiting for a reply."""

    def send_echo(self, peer_key: bytes, nonce: int, now: float) -> None:
        self._echoes.add(nonce)
        self._sessions.send(peer_key, encode_echo(PayloadKind.ECHO_REQUEST, nonce), now)

    def forget_echo(self, nonce: int) -> None:
        self._echoes.discard(nonce)

    def dispatch(self, node_id: bytes, peer_key: bytes, payload: bytes, now: float) -> None:
        wall = now + self._wall_offset
        kind = payload[0]
        try:
            if kind in _ROUTING_KINDS:
                self._routing.receive_control(node_id, payload, wall)
                return
            if not self._limiter.allow(node_id, now):
                self._counters.control_rate_limited += 1
                return
            if kind == PayloadKind.NODE_RECORDS:
                for data in decode_records(payload):
                    self._records.accept(data, wall)
            elif kind == PayloadKind.RECORD_REQUEST:
                self._records.answer_request(node_id, decode_record_request(payload))
            elif kind == PayloadKind.RECORD_DIGEST:
                self._records.on_digest(node_id, decode_digest(payload))
            elif kind == PayloadKind.RENDEZVOUS:
                if payload != RENDEZVOUS_REQUEST:
                    raise MalformedNodeMessage("bad rendezvous request")
                self._paths.on_rendezvous(node_id, now)
            elif kind == PayloadKind.NEIGHBOUR_PRUNE:
                if payload != PRUNE_MESSAGE:
                    raise MalformedNodeMessage("bad neighbour prune")
                self._paths.on_prune(node_id, wall)
            elif kind == PayloadKind.NEIGHBOUR_OFFER:
                self._paths.on_offer(node_id, decode_offer(payload), wall)
            elif kind == PayloadKind.DOCUMENT_DIGEST:
                self._documents.on_digests(node_id, decode_digests(payload), now)
            elif kind == PayloadKind.DOCUMENT_CHUNK:
                self._documents.on_chunk(node_id, payload, now)
            elif kind in _LINK_KINDS:
                self._links.on_message(peer_key, node_id, payload, now)
            elif kind == PayloadKind.ECHO_REQUEST:
                _, nonce = decode_echo(payload)
                self._sessions.send(peer_key, encode_echo(PayloadKind.ECHO_REPLY, nonce), now)
            elif kind == PayloadKind.ECHO_REPLY:
                _, nonce = decode_echo(payload)
                if nonce in self._echoes:
                    self._echoes.discard(nonce)
                    self._outbox.event(EchoAnswered(nonce, now))
            else:
                self._counters.control_malformed += 1
        except (MalformedNodeMessage, MalformedOffer):
            self._counters.control_malformed += 1
