"""The node's side of stream links: which packets take a link, and what arrives on one.

The node core owns one `NodeLinks`. On the way out, the data plane offers every
TUN frame (virtio_net_hdr + packet, a TCP super-packet whole) to
`tun_frame` before cutting it into WireGuard-sized packets: when the
destination's node (or the node that routes the destination's leaf) has a
link up, the frame is queued on it and nothing
else happens; when it has none, bulk traffic (a super-packet) asks the
planner whether to offer one, and the frame takes the UDP path meanwhile.
On the way in, `received` applies the same checks as the UDP path — the
source must belong to the sending node, the destination must be ours or a
leaf's — plus a check of the virtio header. Negotiation messages arrive as
control payloads (`on_message`). Links are off until the runtime calls
`enable` (the simulator and plain-TUN daemons never do); a node with links
off still answers offers, with a decline.

It works through the forwarder's and the address map's public interfaces.
The established links themselves are the driver's objects (`LinkSender`),
handed in by `up()`: queueing a frame on one only buffers it, the driver
does the sending. Connections to open leave as `ConnectLink` requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gossipmesh.links.frames import VNET_SIZE, split_items
from gossipmesh.links.messages import (
    LinkAccept,
    LinkDecline,
    LinkOffer,
    MalformedLinkMessage,
    decode_link_message,
)
from gossipmesh.links.planner import AcceptedToken, LinkPlanner
from gossipmesh.node.address_map import AddressMap
from gossipmesh.node.events import ConnectLink
from gossipmesh.node.forwarding import Forwarder
from gossipmesh.node.options import NodeCounters
from gossipmesh.node.outbox import Outbox
from gossipmesh.session.manager import SessionManager
from gossipmesh.vnet import OffloadError, check_tun_frame, packets_from_tun

BULK_FRAME: int = 2048
"""A TUN frame longer than this is a TCP super-packet: bulk traffic worth a link."""
BULK_BATCH: int = 8
"""Datagrams from one peer in one GRO read that make bulk traffic (a receiver's cue to offer)."""
LINK_SETTLE: float = 1.0
"""Seconds after a link comes up during which the peer's UDP packets may still arrive."""


class LinkSender(Protocol):
    """An established link, as the node sees it: somewhere to queue TUN frames."""

    def queue(self, tun_frame: bytes) -> None: ...

    def abandon(self, reason: str) -> None: ...


@dataclass
class LinkCounters:
    frames_sent: int = 0
    """TUN frames (a super-packet counts once) that left on a link."""
    frames_received: int = 0
    frames_rejected: int = 0
    """Frames from a link dropped: bad virtio header, or a source or destination not allowed."""
    offers_sent: int = 0
    offers_answered: int = 0
    links_opened: int = 0
    links_closed: int = 0
    links_failed: int = 0
    links_abandoned: int = 0
    """Links closed because the peer had gone back to UDP."""


class NodeLinks:
    """Routing TUN frames onto stream links and checking what comes off them."""

    def __init__(
        self,
        planner: LinkPlanner,
        addresses: AddressMap,
        forwarder: Forwarder,
        sessions: SessionManager,
        outbox: Outbox,
        node_counters: NodeCounters,
        service: Callable[[], None],
        timer_scale: float = 1.0,
    ) -> None:
        self.planner = planner
        self.counters = LinkCounters()
        self._addresses = addresses
        self._forwarder = forwarder
        self._sessions = sessions
        self._outbox = outbox
        self._node_counters = node_counters
        self._service = service
        self._scale = timer_scale
        self._senders: dict[bytes, LinkSender] = {}
        self._up_at: dict[bytes, float] = {}
        self._enabled = False

    def enable(self, port: int) -> None:
        """Accept and offer links from now on, on this TCP port."""
        self.planner.port = port
        self._enabled = True

    @property
    def enabled(self) -> bool:
        return self._enabled

    # --- out: TUN -> link ----------------------------------------------------------------

    def tun_frame(self, frame: bytes, now: float) -> bool:
        """Queue a TUN frame on its destination's link; False: take the UDP path."""
        if not self._senders and not self._enabled:
            return False
        version = frame[VNET_SIZE] >> 4
        if version == 4:
            destination = frame[26:30]
        elif version == 6:
            destination = frame[34:50]
        else:
            return False
        # No peer: a leaf's prefix that another node routes, or no route at all.
        peer = self._addresses.peer_for(destination)
        if peer is None:
            return False
        key = peer.public_key
        sender = self._senders.get(key)
        if sender is not None:
            packet_filter = self._forwarder.filter
            if packet_filter is not None:
                packet_filter.note_outbound(memoryview(frame)[VNET_SIZE:], now)
            sender.queue(frame)
            self.counters.frames_sent += 1
            tx_bytes = self._forwarder.tx_bytes
            tx_bytes[key] = tx_bytes.get(key, 0) + len(frame) - VNET_SIZE
            if len(frame) > BULK_FRAME and self.planner.wants_link(key, now):
                self._offer(key, now)  # this link is due for replacement
            return True
        if len(frame) > BULK_FRAME:
            self._offer_if_due(key, peer.endpoint, now)
        return False

    def bulk_over_udp(self, peer_key: bytes, now: float) -> None:
        """Many of the peer's datagrams came in one read: offer a link from this side.

        The sender of bulk data offers on its own, but its connect fails when
        this node is behind a NAT (nothing forwards the TCP port here); the
        ACKs this side sends are too small to offer. Offering from here lets
        this node connect out to the peer, which NAT allows.
        """
        if not self._enabled or peer_key in self._senders:
            return
        peer = self._sessions.peer(peer_key)
        if peer is not None:
            self._offer_if_due(peer_key, peer.endpoint, now)

    def _offer_if_due(self, peer_key: bytes, endpoint: object, now: float) -> None:
        """Offer a link to a node on a direct path, if links are on and the planner wants one."""
        if (
            self._enabled
            and peer_key in self._addresses.node_by_x25519
            and type(endpoint) is tuple
            and self.planner.wants_link(peer_key, now)
        ):
            self._offer(peer_key, now)

    def _offer(self, peer_key: bytes, now: float) -> None:
        payload = self.planner.make_offer(peer_key, now)
        if payload is not None:
            self.counters.offers_sent += 1
            self._sessions.send(peer_key, payload, now)
            self._service()

    # --- in: link -> TUN -------------------------------------------------------------------

    def received(self, peer_key: bytes, plaintext: bytes, now: float) -> None:
        """One opened frame from a peer's link; LinkError (the link must close) if malformed."""
        addresses = self._addresses
        owner = addresses.node_by_x25519.get(peer_key)
        items = split_items(plaintext)
        counters = self.counters
        node_counters = self._node_counters
        if owner is None or not self._enabled:
            counters.frames_rejected += len(items)
            return
        frames_out = self._outbox.tun_frames
        packet_filter = self._forwarder.filter
        local = addresses.local
        by_address = addresses.directory.by_address
        allowed: bytes | None = None
        received_bytes = 0
        for item in items:
            try:
                version = check_tun_frame(item)
            except OffloadError:
                counters.frames_rejected += 1
                continue
            if version == 4:
                source, destination = bytes(item[22:26]), bytes(item[26:30])
            else:
                source, destination = bytes(item[18:34]), bytes(item[34:50])
            if source != allowed:
                if by_address.get(source) != owner and not addresses.may_send_from(owner, source):
                    counters.frames_rejected += 1
                    node_counters.source_rejected += 1
                    continue
                allowed = source
            received_bytes += len(item) - VNET_SIZE
            if packet_filter is not None and not packet_filter.allow_inbound(
                item[VNET_SIZE:], owner, now
            ):
                counters.frames_rejected += 1
                continue
            if destination in local:
                counters.frames_received += 1
                node_counters.delivered += 1
                frames_out.append(item)
                continue
            leaf_peer = addresses.leaf_peer_by_address.get(destination)
            if leaf_peer is None and addresses.routes_here(destination):
                counters.frames_received += 1
                node_counters.delivered += 1
                frames_out.append(item)
                continue
            if leaf_peer is None:
                counters.frames_rejected += 1
                node_counters.destination_rejected += 1
                continue
            counters.frames_received += 1
            try:
                packets = packets_from_tun(bytes(item))
            except OffloadError:
                counters.frames_rejected += 1
                continue
            for packet in packets:  # a stock WireGuard leaf takes plain packets
                self._forwarder.encrypt_and_send(leaf_peer, packet, now)
        rx_bytes = self._forwarder.rx_bytes
        rx_bytes[peer_key] = rx_bytes.get(peer_key, 0) + received_bytes

    # --- negotiation ---------------------------------------------------------------------

    def on_message(self, peer_key: bytes, node_id: bytes, payload: bytes, now: float) -> None:
        """A LINK_OFFER, LINK_ACCEPT or LINK_DECLINE from a node's session."""
        try:
            message = decode_link_message(payload)
        except MalformedLinkMessage:
            self._node_counters.control_malformed += 1
            return
        if isinstance(message, LinkOffer):
            answer = self.planner.on_offer(peer_key, node_id, message, now)
            self._sessions.send(peer_key, answer, now)
        elif isinstance(message, LinkAccept):
            order = self.planner.on_accept(peer_key, message, now)
            if order is None:
                return
            self.counters.offers_answered += 1
            peer = self._sessions.peer(peer_key)
            endpoint = peer.endpoint if peer is not None else None
            if not self._enabled or type(endpoint) is not tuple:
                self.planner.connect_failed(peer_key, now)
                return
            self._outbox.request(ConnectLink(order, endpoint[0]))
        elif isinstance(message, LinkDecline):
            self.counters.offers_answered += 1
            self.planner.on_decline(peer_key, message, now)

    # --- the runtime's reports ---------------------------------------------------------

    def claim(self, token: bytes, now: float) -> AcceptedToken | None:
        return self.planner.claim(token, now)

    def up(self, peer_key: bytes, sender: LinkSender, now: float) -> None:
        """A link to the peer is established: send on it from now on (it replaces any older)."""
        self._senders[peer_key] = sender
        self._up_at[peer_key] = now
        self.planner.link_up(peer_key, now)
        self.counters.links_opened += 1

    def down(self, peer_key: bytes, sender: LinkSender, now: float, *, failed: bool) -> None:
        """A link closed; if it was the peer's current one, traffic returns to UDP."""
        if failed:
            self.counters.links_failed += 1
        else:
            self.counters.links_closed += 1
        if self._senders.get(peer_key) is sender:
            del self._senders[peer_key]
            self._up_at.pop(peer_key, None)
            self.planner.link_down(peer_key, now, failed=failed)

    def udp_from_linked_peer(self, peer_key: bytes, now: float) -> None:
        """The peer sent one of its own packets over UDP although we share a link.

        A node sends everything for a linked peer on the link, so this means
        its side is gone (TCP timed out there, or it restarted): a link whose
        TCP died silently would otherwise swallow our traffic until our own
        TCP timeout. Packets sent just before the link came up are let be.
        """
        sender = self._senders.get(peer_key)
        if sender is None:
            return
        if now - self._up_at.get(peer_key, 0.0) < LINK_SETTLE / self._scale:
            return
        self.counters.links_abandoned += 1
        sender.abandon("the peer sends over UDP: its side of the link is gone")

    def connect_failed(self, peer_key: bytes, now: float) -> None:
        self.counters.links_failed += 1
        self.planner.connect_failed(peer_key, now)

    def forget(self, peer_key: bytes) -> None:
        """The peer's record is gone: so is its planner state (a link expires with its keys)."""
        self.planner.forget(peer_key)

    def has_link(self, peer_key: bytes) -> bool:
        return peer_key in self._senders

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "up": len(self._senders), **vars(self.counters)}
