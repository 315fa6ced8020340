"""Stream links' TCP sockets: the listener, connections, and moving frames in batches.

The negotiation (`gossipmesh.links.planner`) and the checks on what arrives
(`gossipmesh.node.links`) are sans-IO; this module is the only place that
touches the sockets. The listener shares the node's UDP port number. An
inbound connection has a few seconds to present a token the node accepted
over its WireGuard session, or it is closed; an outbound one presents the
token it was given. Then each link:

- queues the TUN frames the node routes to it while a drain runs and, when
  the drain ends (or 256 KiB are queued), seals them into as few frames as
  fit and sends them in one `sendmsg`; what the kernel does not take waits
  for the socket to be writable, up to MAX_BACKLOG, beyond which frames are
  dropped like a full NIC queue drops them (TCP inside recovers);
- reads with `recv_into` one buffer, opens every complete frame and hands
  its plaintext to the node; a frame that fails to open closes the link and
  traffic falls back to UDP.

TCP_NODELAY keeps a lone packet (a ping, an ACK) from waiting; TCP_USER_TIMEOUT
closes a link whose data goes unacknowledged for 5 s, and keepalives an idle
link to a vanished peer within ~15 s. The peer then sees our packets arrive
over UDP and drops its side too (`NodeLinks.udp_from_linked_peer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Final, Protocol

from gossipmesh.links.frames import (
    MAX_PLAINTEXT,
    PREAMBLE_SIZE,
    FrameOpener,
    FrameSealer,
    LinkError,
    parse_preamble,
    preamble,
)
from gossipmesh.links.planner import CONNECT_TIMEOUT, AcceptedToken, ConnectOrder
from gossipmesh.node.links import LinkSender
from gossipmesh.runtime.udp import mark_socket

log = logging.getLogger("gossipmesh.links")

PREAMBLE_DEADLINE: Final = 5.0
"""Seconds an inbound connection has to present its token."""
MAX_INBOUND: Final = 32
"""Inbound connections waiting for their preamble at once; more are refused."""
MAX_BACKLOG: Final = 1024 * 1024
"""Bytes a link may hold unsent before it drops new frames.

Small on purpose, with NOTSENT_LOWAT: what waits here or unsent in the
kernel delays every packet behind it, and a tunnelled TCP that sees a drop
slows down, where one that sees a deep queue only waits (TCP-over-TCP
bufferbloat). With NOTSENT_LOWAT at most ~2 MiB wait: ~8 ms at 2 Gbit/s,
~170 ms at 100 Mbit/s. Measured: 256 KiB of NOTSENT_LOWAT cost thousands of
inner retransmits per second at 3 Gbit/s for no gain; 1 MiB a few hundred."""
NOTSENT_LOWAT: Final = 1024 * 1024
"""TCP_NOTSENT_LOWAT: the kernel takes at most this much not-yet-sent data."""
RECEIVE_BUFFER: Final = 512 * 1024
READS_PER_WAKE: Final = 16
RETIRE_GRACE: Final = 2.0
"""Seconds a replaced link stays open so frames already in flight arrive."""
USER_TIMEOUT_MS: Final = 5_000
"""Unacknowledged data this old closes the link: traffic goes back to UDP, nothing is lost."""
TCP_NOTSENT_LOWAT: Final = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
KEEPALIVE_IDLE: Final = 5
KEEPALIVE_INTERVAL: Final = 3
KEEPALIVE_COUNT: Final = 3


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    mark_socket(sock)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)


class LinkReports(Protocol):
    """The node's side of stream links, as the runtime reports to it (`NodeRunner`)."""

    def claim(self, token: bytes) -> AcceptedToken | None: ...

    def up(self, peer_key: bytes, sender: LinkSender) -> None: ...

    def down(self, peer_key: bytes, sender: LinkSender, *, failed: bool) -> None: ...

    def received(self, peer_key: bytes, plaintext: bytes) -> None: ...

    def connect_failed(self, peer_key: bytes) -> None: ...


class StreamLink:
    """One established link to one peer."""

    def __init__(
        self,
        owner: StreamLinks,
        peer_key: bytes,
        sock: socket.socket,
        send_key: bytes,
        receive_key: bytes,
    ) -> None:
        self._owner = owner
        self.peer_key = peer_key
        self.sock = sock
        self._sealer = FrameSealer(send_key)
        self._opener = FrameOpener(receive_key)
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._backlog: list[memoryview] = []
        self._backlog_bytes = 0
        self._writer_armed = False
        self._buffer = bytearray(RECEIVE_BUFFER)
        self._view = memoryview(self._buffer)
        self.closed = False
        self._finishing = False
        self.dropped_frames = 0
        self.bytes_sent = 0

    # --- LinkSender -------------------------------------------------------------------

    def abandon(self, reason: str) -> None:
        """The node has evidence the link is dead (the peer sends over UDP): close it."""
        self.close(failed=True, reason=reason)

    def queue(self, tun_frame: bytes) -> None:
        if not self._queue:
            self._owner.mark_dirty(self)
        self._queue.append(tun_frame)
        self._queued_bytes += len(tun_frame)
        if self._queued_bytes >= MAX_PLAINTEXT:
            self.flush()

    # --- sending --------------------------------------------------------------------------

    def flush(self) -> None:
        frames = self._queue
        if not frames or self.closed:
            return
        self._queue = []
        self._queued_bytes = 0
        if self._backlog_bytes >= MAX_BACKLOG:
            self.dropped_frames += len(frames)
            return
        try:
            buffers = self._sealer.seal(frames)
        except (LinkError, ValueError) as exc:
            self.close(failed=True, reason=str(exc))
            return
        if self._backlog:
            self._hold(buffers, 0)
            return
        try:
            sent = self.sock.sendmsg(buffers)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.close(failed=True, reason=f"send: {exc.strerror}")
            return
        self.bytes_sent += sent
        self._hold(buffers, sent)

    def _hold(self, buffers: list[bytes], sent: int) -> None:
        """Keep what `sendmsg` did not take, in order, until the socket is writable."""
        for buffer in buffers:
            if sent >= len(buffer):
                sent -= len(buffer)
                continue
            rest = memoryview(buffer)[sent:]
            sent = 0
            self._backlog.append(rest)
            self._backlog_bytes += len(rest)
        if self._backlog and not self._writer_armed:
            self._owner.loop.add_writer(self.sock.fileno(), self._on_writable)
            self._writer_armed = True

    def _on_writable(self) -> None:
        try:
            sent = self.sock.sendmsg(self._backlog[:512])
        except BlockingIOError:
            return
        except OSError as exc:
            self.close(failed=True, reason=f"send: {exc.strerror}")
            return
        self.bytes_sent += sent
        self._backlog_bytes -= sent
        backlog = self._backlog
        while backlog and sent >= len(backlog[0]):
            sent -= len(backlog.pop(0))
        if sent:
            backlog[0] = backlog[0][sent:]
        if not backlog:
            self._owner.loop.remove_writer(self.sock.fileno())
            self._writer_armed = False
            if self._finishing:
                self.finish()

    # --- receiving ------------------------------------------------------------------------

    def on_readable(self) -> None:
        received = self._owner.node_links.received
        for _ in range(READS_PER_WAKE):
            try:
                count = self.sock.recv_into(self._buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close(failed=True, reason=f"receive: {exc.strerror}")
                return
            if count == 0:
                self.close(failed=self._opener.buffered > 0, reason="closed by the peer")
                return
            try:
                for plaintext in self._opener.feed(self._view[:count]):
                    received(self.peer_key, plaintext)
            except LinkError as exc:
                self.close(failed=True, reason=str(exc))
                return
            except Exception:  # a bug of ours: say so once, and fall back to UDP
                log.exception("stream link to %s: error handling a frame", self.peer_key.hex()[:8])
                self.close(failed=True, reason="internal error")
                return
            if count < RECEIVE_BUFFER:
                return

    # --- closing ----------------------------------------------------------------------------

    def finish(self) -> None:
        """Send nothing more: shut down our direction once the backlog is out.

        The peer reads to our end of stream, then its reader sees EOF and
        closes; frames it sent first still arrive here, as this side keeps
        reading. Closing outright could reset the connection with frames unread.
        """
        self._finishing = True
        if not self._backlog and not self.closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def close(self, *, failed: bool = False, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        loop = self._owner.loop
        with contextlib.suppress(Exception):
            loop.remove_reader(self.sock.fileno())
        if self._writer_armed:
            with contextlib.suppress(Exception):
                loop.remove_writer(self.sock.fileno())
        self._view.release()
        self.sock.close()
        self._owner.link_closed(self, failed=failed, reason=reason)


class StreamLinks:
    """The node's listener and all its links; `connect_link` opens the ones the node orders."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        node_links: LinkReports,
        listener: socket.socket,
        max_age: float,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.loop = loop
        self.node_links = node_links
        self._listener = listener
        self._max_age = max_age
        self._connect_timeout = connect_timeout
        self._inbound: dict[socket.socket, asyncio.TimerHandle] = {}
        self._preambles: dict[socket.socket, bytearray] = {}
        self._links: dict[bytes, StreamLink] = {}
        self._retiring: set[StreamLink] = set()
        self._dirty: list[StreamLink] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._handles: dict[StreamLink, asyncio.TimerHandle] = {}
        self.refused = 0
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), self._on_acceptable)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def links(self) -> dict[bytes, StreamLink]:
        return dict(self._links)

    # --- batching -----------------------------------------------------------------------

    def mark_dirty(self, link: StreamLink) -> None:
        self._dirty.append(link)

    def flush(self) -> None:
        """Seal and send what every link queued (the data plane calls this after a drain)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, []
        for link in dirty:
            link.flush()

    # --- outbound -------------------------------------------------------------------------

    def connect_link(self, order: ConnectOrder, host: str) -> None:
        task = self.loop.create_task(self._connect(order, host))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, order: ConnectOrder, host: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(
                self.loop.sock_connect(sock, (host, order.port)), self._connect_timeout
            )
            await asyncio.wait_for(
                self.loop.sock_sendall(sock, preamble(order.token)), self._connect_timeout
            )
        except (TimeoutError, OSError) as exc:
            sock.close()
            log.debug("stream link to %s:%d failed: %s", host, order.port, exc)
            self.node_links.connect_failed(order.peer_key)
            return
        except asyncio.CancelledError:
            sock.close()
            raise
        self._establish(order.peer_key, sock, order.send_key, order.receive_key)

    # --- inbound --------------------------------------------------------------------------

    def _on_acceptable(self) -> None:
        for _ in range(16):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return
            if len(self._inbound) >= MAX_INBOUND:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            self._preambles[sock] = bytearray()
            self._inbound[sock] = self.loop.call_later(PREAMBLE_DEADLINE, self._drop_inbound, sock)
            self.loop.add_reader(sock.fileno(), self._on_preamble, sock)

    def _drop_inbound(self, sock: socket.socket) -> None:
        handle = self._inbound.pop(sock, None)
        if handle is not None:
            handle.cancel()
        self._preambles.pop(sock, None)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(sock.fileno())
        sock.close()

    def _on_preamble(self, sock: socket.socket) -> None:
        buffer = self._preambles[sock]
        try:
            data = sock.recv(PREAMBLE_SIZE - len(buffer))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_inbound(sock)
            return
        buffer += data
        if len(buffer) < PREAMBLE_SIZE:
            return
        try:
            accepted = self.node_links.claim(parse_preamble(bytes(buffer)))
        except LinkError:
            accepted = None
        if accepted is None:
            self.refused += 1
            self._drop_inbound(sock)
            return
        handle = self._inbound.pop(sock)
        handle.cancel()
        del self._preambles[sock]
        self.loop.remove_reader(sock.fileno())
        self._establish(accepted.peer_key, sock, accepted.send_key, accepted.receive_key)

    # --- life of a link -----------------------------------------------------------------

    def _establish(
        self, peer_key: bytes, sock: socket.socket, send_key: bytes, receive_key: bytes
    ) -> None:
        try:
            _tune(sock)
        except OSError:
            sock.close()
            self.node_links.connect_failed(peer_key)
            return
        link = StreamLink(self, peer_key, sock, send_key, receive_key)
        old = self._links.get(peer_key)
        self._links[peer_key] = link
        self.loop.add_reader(sock.fileno(), link.on_readable)
        self._handles[link] = self.loop.call_later(self._max_age, self._expire, link)
        self.node_links.up(peer_key, link)
        if old is not None:
            self._retiring.add(old)
            self.loop.call_later(RETIRE_GRACE, self._retire, old)

    def _retire(self, link: StreamLink) -> None:
        """Half-close a replaced link; it closes when the peer's side ends too (or later)."""
        link.flush()
        link.finish()
        self.loop.call_later(RETIRE_GRACE, self._close_retired, link)

    def _close_retired(self, link: StreamLink) -> None:
        self._retiring.discard(link)
        link.close(reason="replaced")

    def _expire(self, link: StreamLink) -> None:
        link.close(reason="keys too old")

    def link_closed(self, link: StreamLink, *, failed: bool, reason: str) -> None:
        handle = self._handles.pop(link, None)
        if handle is not None:
            handle.cancel()
        self._retiring.discard(link)
        if self._links.get(link.peer_key) is link:
            del self._links[link.peer_key]
        log.log(
            logging.INFO if failed else logging.DEBUG,
            "stream link to %s closed: %s",
            link.peer_key.hex()[:8],
            reason or "done",
        )
        self.node_links.down(link.peer_key, link, failed=failed)

    def close(self) -> None:
        """Close the listener and every link and pending connection."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self._listener.fileno())
        self._listener.close()
        for sock in list(self._inbound):
            self._drop_inbound(sock)
        for link in [*self._links.values(), *self._retiring]:
            link.close(reason="shutting down")


def open_link_listener(port: int) -> socket.socket:
    """A TCP listener on the node's UDP port number (all IPv4 addresses)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock
