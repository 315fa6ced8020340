"""The stream-link runtime over real loopback TCP sockets; only the node side is faked.

Two `StreamLinks` managers share one event loop. The fake stands in for
`NodeLinks` exactly where runtime/links.py calls it: `received`, `claim`,
`up`, `down`, `connect_failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import pytest

from gossipmesh.links.frames import FrameOpener, FrameSealer, preamble, split_items
from gossipmesh.links.planner import AcceptedToken, ConnectOrder
from gossipmesh.node.links import LinkSender
from gossipmesh.runtime import links as links_module
from gossipmesh.runtime.links import StreamLink, StreamLinks
from tests.unit.links.support import tun_frame

KEY_A = b"A" * 32
"""The connecting node's X25519 key, as the acceptor knows it."""
KEY_B = b"B" * 32
TO_ACCEPTOR = bytes(range(32))
TO_CONNECTOR = bytes(range(100, 132))
TOKEN = b"T" * 16
DEADLINE = 10.0


@dataclass
class FakeNode:
    """The node side as runtime/links.py reports to it (`LinkReports`): records every report."""

    tokens: dict[bytes, AcceptedToken] = field(default_factory=dict)
    items: dict[bytes, list[bytes]] = field(default_factory=dict)
    ups: list[tuple[bytes, LinkSender]] = field(default_factory=list)
    downs: list[tuple[bytes, LinkSender, bool]] = field(default_factory=list)
    failed_connects: list[bytes] = field(default_factory=list)
    claims: list[bytes] = field(default_factory=list)

    def received(self, peer_key: bytes, plaintext: bytes) -> None:
        items = split_items(plaintext)  # LinkError closes the link, as NodeLinks' would
        self.items.setdefault(peer_key, []).extend(bytes(item) for item in items)

    def claim(self, token: bytes) -> AcceptedToken | None:
        self.claims.append(token)
        return self.tokens.pop(token, None)

    def up(self, peer_key: bytes, sender: LinkSender) -> None:
        self.ups.append((peer_key, sender))

    def down(self, peer_key: bytes, sender: LinkSender, *, failed: bool) -> None:
        self.downs.append((peer_key, sender, failed))

    def connect_failed(self, peer_key: bytes) -> None:
        self.failed_connects.append(peer_key)

    def accept(self, token: bytes = TOKEN, peer_key: bytes = KEY_A) -> None:
        self.tokens[token] = AcceptedToken(
            peer_key, send_key=TO_CONNECTOR, receive_key=TO_ACCEPTOR, expires=float("inf")
        )


def loopback_listener() -> socket.socket:
    """open_link_listener binds every address; tests keep to 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


async def until(condition: Callable[[], object], what: str, deadline: float = DEADLINE) -> None:
    """Let the loop run until `condition()` holds; fail after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


@dataclass
class Side:
    node: FakeNode
    links: StreamLinks


def make_side(loop: asyncio.AbstractEventLoop, max_age: float = 3600.0) -> Side:
    node = FakeNode()
    return Side(node, StreamLinks(loop, node, loopback_listener(), max_age))


def run(body: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(asyncio.get_running_loop()), 30)

    asyncio.run(main())


def order_for(acceptor: Side, token: bytes = TOKEN) -> ConnectOrder:
    return ConnectOrder(
        KEY_B, token, acceptor.links.port, send_key=TO_ACCEPTOR, receive_key=TO_CONNECTOR
    )


async def connected_pair(loop: asyncio.AbstractEventLoop) -> tuple[Side, Side]:
    """(connector, acceptor), with one link up on both sides."""
    connector, acceptor = make_side(loop), make_side(loop)
    acceptor.node.accept()
    connector.links.connect_link(order_for(acceptor), "127.0.0.1")
    await until(lambda: connector.node.ups and acceptor.node.ups, "the link to come up")
    return connector, acceptor


def close(*sides: Side) -> None:
    for side in sides:
        side.links.close()


@contextlib.contextmanager
def raw_client(port: int, *, receive_buffer: int | None = None) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


async def read_to_eof(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """What the other end sent before it closed (a close with our bytes unread resets)."""
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), DEADLINE)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def frames_for(count: int, tag: int, size: int = 1200) -> list[bytes]:
    return [tun_frame(bytes([tag, n % 256]) * (size // 2)) for n in range(count)]


# --- data both ways ------------------------------------------------------------------------


def test_frames_cross_in_both_directions() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector, acceptor = await connected_pair(loop)
        try:
            assert acceptor.node.claims == [TOKEN]
            assert connector.node.ups[0][0] == KEY_B and acceptor.node.ups[0][0] == KEY_A
            out_link = connector.links.links()[KEY_B]
            back_link = acceptor.links.links()[KEY_A]
            assert connector.node.ups[0][1] is out_link and acceptor.node.ups[0][1] is back_link

            forward = frames_for(300, 1) + [tun_frame(bytes(65535 - 20))] * 5
            for frame in forward:
                out_link.queue(frame)
            connector.links.flush()
            backward = frames_for(12, 2, size=60000)  # below MAX_BACKLOG: nothing dropped
            for frame in backward:
                back_link.queue(frame)
            acceptor.links.flush()

            await until(
                lambda: (
                    len(acceptor.node.items.get(KEY_A, [])) >= len(forward)
                    and len(connector.node.items.get(KEY_B, [])) >= len(backward)
                ),
                "every frame to arrive",
            )
            assert acceptor.node.items[KEY_A] == forward
            assert connector.node.items[KEY_B] == backward
            assert not connector.node.downs and not acceptor.node.downs
        finally:
            close(connector, acceptor)

    run(body)


def test_small_batches_arrive_in_order() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector, acceptor = await connected_pair(loop)
        try:
            link = connector.links.links()[KEY_B]
            sent: list[bytes] = []
            for batch in range(40):
                frames = frames_for(batch % 5 + 1, batch)
                for frame in frames:
                    link.queue(frame)
                sent.extend(frames)
                connector.links.flush()
                if batch % 7 == 0:
                    await until(
                        lambda: len(acceptor.node.items.get(KEY_A, [])) == len(sent),
                        "a batch to arrive",
                    )
            await until(lambda: acceptor.node.items.get(KEY_A) == sent, "every batch to arrive")
        finally:
            close(connector, acceptor)

    run(body)


def test_flush_without_queued_frames_sends_nothing() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector, acceptor = await connected_pair(loop)
        try:
            connector.links.flush()
            link = connector.links.links()[KEY_B]
            link.flush()
            assert link.bytes_sent == 0
        finally:
            close(connector, acceptor)

    run(body)


# --- refusals and failures ---------------------------------------------------------------


def test_a_wrong_token_is_refused_and_the_socket_closed() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        acceptor = make_side(loop)
        acceptor.node.accept()
        try:
            with raw_client(acceptor.links.port) as client:
                await loop.sock_sendall(client, preamble(b"W" * 16))
                assert await read_to_eof(loop, client) == b""
            assert acceptor.links.refused == 1
            assert acceptor.node.claims == [b"W" * 16]
            assert not acceptor.node.ups
            assert TOKEN in acceptor.node.tokens  # the real token still works
        finally:
            close(acceptor)

    run(body)


def test_a_bad_preamble_is_refused_and_the_socket_closed() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        acceptor = make_side(loop)
        acceptor.node.accept()
        try:
            with raw_client(acceptor.links.port) as client:
                await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert await read_to_eof(loop, client) == b""
            assert acceptor.links.refused == 1
            assert acceptor.node.claims == []
        finally:
            close(acceptor)

    run(body)


def test_a_preamble_in_pieces_is_accepted() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        acceptor = make_side(loop)
        acceptor.node.accept()
        try:
            with raw_client(acceptor.links.port) as client:
                data = preamble(TOKEN)
                for index in range(0, len(data), 5):
                    await loop.sock_sendall(client, data[index : index + 5])
                    await asyncio.sleep(0)
                await until(lambda: acceptor.node.ups, "the link to come up")
                sealer = FrameSealer(TO_ACCEPTOR)
                frames = frames_for(3, 9)
                await loop.sock_sendall(client, b"".join(sealer.seal(frames)))
                await until(lambda: acceptor.node.items.get(KEY_A) == frames, "the frames")
        finally:
            close(acceptor)

    run(body)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 8,  # a length beyond any frame
        b"\x00\x00\x00\x20" + bytes(32),  # a frame that fails authentication
    ],
)
def test_garbage_after_a_valid_preamble_fails_the_link(garbage: bytes) -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        acceptor = make_side(loop)
        acceptor.node.accept()
        try:
            with raw_client(acceptor.links.port) as client:
                await loop.sock_sendall(client, preamble(TOKEN) + garbage)
                await until(lambda: acceptor.node.downs, "the link to close")
                assert await read_to_eof(loop, client) == b""
            ((peer_key, sender, failed),) = acceptor.node.downs
            assert peer_key == KEY_A and failed
            assert sender is acceptor.node.ups[0][1]
            assert acceptor.links.links() == {}
            assert KEY_A not in acceptor.node.items
        finally:
            close(acceptor)

    run(body)


def test_a_malformed_item_inside_a_good_frame_fails_the_link() -> None:
    """The node raises LinkError for a frame it cannot split: the runtime closes the link."""

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        acceptor = make_side(loop)
        acceptor.node.accept()
        try:
            with raw_client(acceptor.links.port) as client:
                encrypt = FrameSealer(TO_ACCEPTOR)._encrypt  # a frame whose plaintext is junk
                ciphertext = encrypt(bytes(12), b"\x00\x05junk", None)
                header = len(ciphertext).to_bytes(4, "big")
                await loop.sock_sendall(client, preamble(TOKEN) + header + ciphertext)
                await until(lambda: acceptor.node.downs, "the link to close")
            assert acceptor.node.downs[0][2] is True
        finally:
            close(acceptor)

    run(body)


@pytest.mark.parametrize("partial", [False, True])
def test_a_peer_closing_reports_down(partial: bool) -> None:
    """A clean close is not a failure; a close in the middle of a frame is."""

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector, acceptor = await connected_pair(loop)
        try:
            link = connector.links.links()[KEY_B]
            if partial:
                (frame,) = [b"".join(FrameSealer(TO_ACCEPTOR).seal(frames_for(1, 3)))]
                link.sock.send(frame[:10])  # a frame header, and a little more
                await until(
                    lambda: acceptor.links.links()[KEY_A]._opener.buffered == 10,
                    "the partial frame to arrive",
                )
            link.sock.shutdown(socket.SHUT_RDWR)
            await until(lambda: acceptor.node.downs, "the acceptor to notice")
            ((peer_key, _, failed),) = acceptor.node.downs
            assert peer_key == KEY_A
            assert failed is partial
            await until(lambda: connector.node.downs, "the connector to notice")
            assert acceptor.links.links() == {}
        finally:
            close(connector, acceptor)

    run(body)


def test_closing_a_manager_closes_its_links_and_the_peer_notices() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector, acceptor = await connected_pair(loop)
        try:
            connector.links.close()
            assert [d[2] for d in connector.node.downs] == [False]
            await until(lambda: acceptor.node.downs, "the peer to notice")
            assert [d[2] for d in acceptor.node.downs] == [False]
        finally:
            close(acceptor)

    run(body)


def test_a_refused_connection_reports_connect_failed() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector = make_side(loop)
        closed = loopback_listener()
        port = closed.getsockname()[1]
        closed.close()
        try:
            order = ConnectOrder(KEY_B, TOKEN, port, TO_ACCEPTOR, TO_CONNECTOR)
            connector.links.connect_link(order, "127.0.0.1")
            await until(lambda: connector.node.failed_connects, "the connect to fail")
            assert connector.node.failed_connects == [KEY_B]
            assert not connector.node.ups
        finally:
            close(connector)

    run(body)


# --- life of a link -----------------------------------------------------------------------


def test_a_link_is_closed_when_its_keys_are_too_old() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector, acceptor = make_side(loop, max_age=0.2), make_side(loop)
        acceptor.node.accept()
        try:
            connector.links.connect_link(order_for(acceptor), "127.0.0.1")
            await until(lambda: connector.node.downs, "the link to expire")
            assert connector.node.downs[0][2] is False
            await until(lambda: acceptor.node.downs, "the peer to notice")
        finally:
            close(connector, acceptor)

    run(body)


def test_a_new_link_replaces_the_old_which_closes_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(links_module, "RETIRE_GRACE", 0.1)

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        connector, acceptor = await connected_pair(loop)
        try:
            old = connector.links.links()[KEY_B]
            acceptor.node.accept(b"U" * 16)
            connector.links.connect_link(order_for(acceptor, b"U" * 16), "127.0.0.1")
            await until(lambda: len(connector.node.ups) == 2, "the second link")
            new = connector.links.links()[KEY_B]
            assert new is not old and not old.closed
            await until(lambda: old.closed, "the old link to retire")
            assert connector.node.downs == [(KEY_B, old, False)]
            await until(lambda: len(acceptor.node.downs) == 1, "the acceptor to retire its old")
            assert acceptor.node.downs[0][1] is acceptor.node.ups[0][1]
            new.queue(frames_for(1, 2)[0])
            connector.links.flush()
            await until(lambda: acceptor.node.items.get(KEY_A), "a frame on the new link")
            assert acceptor.node.items[KEY_A] == frames_for(1, 2)
        finally:
            close(connector, acceptor)

    run(body)


def test_a_full_backlog_drops_frames_instead_of_growing(monkeypatch: pytest.MonkeyPatch) -> None:
    backlog_limit = 256 * 1024
    monkeypatch.setattr(links_module, "MAX_BACKLOG", backlog_limit)

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        acceptor = make_side(loop)
        acceptor.node.accept()
        try:
            with raw_client(acceptor.links.port, receive_buffer=4096) as client:
                await loop.sock_sendall(client, preamble(TOKEN))
                await until(lambda: acceptor.node.ups, "the link to come up")
                link = cast(StreamLink, acceptor.node.ups[0][1])
                link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                frame = tun_frame(bytes(60000))
                queued = 0
                most = 0
                # The client reads nothing: the kernel's buffers fill, then the backlog.
                for _ in range(2000):
                    for _ in range(4):
                        link.queue(frame)
                        queued += 1
                    acceptor.links.flush()
                    await asyncio.sleep(0)  # let the writer run, as the loop would
                    most = max(most, link._backlog_bytes)
                    if link.dropped_frames >= 40:
                        break
                assert link.dropped_frames >= 40
                # Bounded: the limit, plus at most one batch sealed before it was reached.
                assert most <= backlog_limit + 5 * (len(frame) + 2) + 64
                assert not link.closed

                # What was not dropped arrives whole and in order once the peer reads.
                opener = FrameOpener(TO_CONNECTOR)
                expected = queued - link.dropped_frames
                got: list[bytes] = []
                while len(got) < expected:
                    chunk = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), DEADLINE)
                    assert chunk, "the link closed"
                    for plaintext in opener.feed(chunk):
                        got.extend(bytes(item) for item in split_items(plaintext))
                assert got == [frame] * expected
                await until(lambda: link._backlog_bytes == 0, "the backlog to drain")
        finally:
            close(acceptor)

    run(body)
