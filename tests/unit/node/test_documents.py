"""Document gossip: a push reaches every node; older, forged or flooded ones change nothing."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import pytest

from gossipmesh.identity import Identity
from gossipmesh.node.documents import (
    ANNOUNCE_EVERY_ROUNDS,
    MAX_REASSEMBLIES,
    DocumentSync,
    decode_chunk,
    decode_digests,
    encode_chunks,
)
from gossipmesh.node.messages import MalformedNodeMessage
from gossipmesh.trust.document import (
    DocumentError,
    DocumentKind,
    DocumentRefusal,
    SignedDocument,
    decode_document,
    sign_document,
)
from gossipmesh.wire import PayloadKind

AUTHORITY = Identity.from_seed(bytes(range(32)))
ROGUE = Identity.from_seed(bytes(32))


def _policy(version: int, size: int = 40, signer: Identity = AUTHORITY) -> bytes:
    payload = (f"version = {version}\n".encode() + b"#" * size)[:size]
    return sign_document(signer, DocumentKind.POLICY, version, 1_700_000_000, payload).encode()


class Line:
    """DocumentSyncs on a line a-b-c-..., their messages carried by a queue (lossy on demand)."""

    def __init__(self, count: int, drop: Callable[[bytes, bytes, bytes], bool] | None = None):
        self.names = [bytes([i]) * 20 for i in range(count)]
        self.queue: deque[tuple[bytes, bytes, bytes]] = deque()
        self.drop = drop or (lambda source, target, message: False)
        self.nodes: dict[bytes, DocumentSync] = {}
        for index, name in enumerate(self.names):
            neighbours = [self.names[j] for j in (index - 1, index + 1) if 0 <= j < count]
            self.nodes[name] = DocumentSync(
                AUTHORITY.public_key, self._sender(name), lambda n=neighbours: n
            )

    def _sender(self, source: bytes) -> Callable[[bytes, bytes], None]:
        def send(target: bytes, message: bytes) -> None:
            if not self.drop(source, target, message):
                self.queue.append((source, target, message))

        return send

    def run(self, now: float = 0.0, limit: int = 10_000) -> int:
        delivered = 0
        while self.queue and delivered < limit:
            source, target, message = self.queue.popleft()
            node = self.nodes[target]
            if message[0] == PayloadKind.DOCUMENT_CHUNK:
                node.on_chunk(source, message, now)
            else:
                node.on_digests(source, decode_digests(message), now)
            delivered += 1
        assert not self.queue, "gossip did not settle"
        return delivered

    def versions(self) -> list[int | None]:
        held = [n.held.get(DocumentKind.POLICY) for n in self.nodes.values()]
        return [None if d is None else d.version for d in held]


def test_a_push_reaches_every_node_of_a_line() -> None:
    line = Line(6)
    line.nodes[line.names[0]].offer(_policy(2, size=5000), 0.0)  # five chunks
    line.run()
    assert line.versions() == [2] * 6


def test_a_newer_version_replaces_and_an_older_one_is_refused_everywhere() -> None:
    line = Line(4)
    line.nodes[line.names[0]].offer(_policy(2), 0.0)
    line.run()
    line.nodes[line.names[3]].offer(_policy(5), 1.0)
    line.run(now=1.0)
    assert line.versions() == [5] * 4
    with pytest.raises(DocumentError) as caught:
        line.nodes[line.names[1]].offer(_policy(3), 2.0)
    assert caught.value.reason is DocumentRefusal.NOT_NEWER
    assert line.versions() == [5] * 4


def test_a_replayed_older_document_from_a_member_changes_nothing() -> None:
    line = Line(2)
    line.nodes[line.names[0]].offer(_policy(4), 0.0)
    line.run()
    target = line.nodes[line.names[1]]
    for chunk in encode_chunks(_decoded(_policy(3))):
        target.on_chunk(line.names[0], chunk, 1.0)
    assert line.versions() == [4, 4]
    assert target.counters.chunks_dropped == 1


def test_forged_and_foreign_documents_are_refused_and_counted() -> None:
    line = Line(2)
    target = line.nodes[line.names[1]]
    forged = bytearray(_policy(9))
    forged[-1] ^= 1
    for data in (bytes(forged), _policy(9, signer=ROGUE)):
        for chunk in encode_chunks(_decoded(data)):
            target.on_chunk(line.names[0], chunk, 0.0)
    assert target.held == {}
    assert target.counters.refused == {"bad_signature": 1, "wrong_authority": 1}
    assert not line.queue  # nothing refused is passed on


def test_a_lost_chunk_is_repaired_by_anti_entropy() -> None:
    dropped: list[bytes] = []

    def drop_first_chunk(source: bytes, target: bytes, message: bytes) -> bool:
        if message[0] == PayloadKind.DOCUMENT_CHUNK and not dropped:
            dropped.append(message)
            return True
        return False

    line = Line(3, drop_first_chunk)
    line.nodes[line.names[0]].offer(_policy(2, size=3000), 0.0)
    line.run()
    assert line.versions() == [2, None, None]
    for now in range(1, ANNOUNCE_EVERY_ROUNDS + 1):
        for node in line.nodes.values():
            node.round(float(now) * 5)
        line.run(now=float(now) * 5)
    assert line.versions() == [2, 2, 2]


def test_a_chunk_flood_keeps_reassembly_bounded() -> None:
    node = DocumentSync(AUTHORITY.public_key, lambda target, message: None, lambda: [])
    for peer in range(3 * MAX_REASSEMBLIES):
        chunks = encode_chunks(_decoded(_policy(peer + 1, size=3000)))
        node.on_chunk(bytes([peer]) * 20, chunks[0], 0.0)  # never completed
    assert len(node._reassembly) == MAX_REASSEMBLIES
    assert node.counters.chunks_dropped == 2 * MAX_REASSEMBLIES
    node.round(1000.0)
    assert not node._reassembly


def test_a_network_without_an_authority_takes_no_documents() -> None:
    node = DocumentSync(None, lambda target, message: None, lambda: [])
    with pytest.raises(DocumentError):
        node.offer(_policy(1), 0.0)
    for chunk in encode_chunks(_decoded(_policy(1))):
        node.on_chunk(b"x" * 20, chunk, 0.0)
    assert node.held == {}


@pytest.mark.parametrize(
    "chunk",
    [
        bytes([PayloadKind.DOCUMENT_CHUNK]),
        bytes([PayloadKind.DOCUMENT_CHUNK, 1]) + bytes(8) + b"\x00\x05\x00\x05" + b"x",
        bytes([PayloadKind.DOCUMENT_CHUNK, 1]) + bytes(8) + b"\x00\x00\x00\x00" + b"x",
        bytes([PayloadKind.DOCUMENT_CHUNK, 1]) + bytes(8) + b"\x00\x00\xff\xff" + b"x",
    ],
)
def test_malformed_chunks_are_refused(chunk: bytes) -> None:
    with pytest.raises(MalformedNodeMessage):
        decode_chunk(chunk)


def test_unknown_document_kind_is_malformed() -> None:
    node = DocumentSync(AUTHORITY.public_key, lambda target, message: None, lambda: [])
    chunk = bytearray(encode_chunks(_decoded(_policy(1)))[0])
    chunk[1] = 99
    with pytest.raises(MalformedNodeMessage):
        node.on_chunk(b"x" * 20, bytes(chunk), 0.0)


def _decoded(data: bytes) -> SignedDocument:
    """Parsed but not verified: what an attacker can put on the wire."""
    return decode_document(data)
