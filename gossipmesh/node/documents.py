"""The authority's documents (policy, revocation list): keep the newest, spread it in seconds.

Every node holds at most one verified document per kind. Neighbours compare
short digests (kind, version, hash): one that sees an older version at a
neighbour pushes its own, in chunks that fit a control message; the receiver
reassembles, verifies against the authority key and, when newer, keeps it,
asks the driver to persist it, and announces it to its own neighbours. So a
push reaches every node of a connected mesh within a few round trips per
hop, and anti-entropy (a digest to every neighbour every few rounds) repairs
what a lost datagram missed.

An older, foreign or forged document changes nothing: each refusal is counted
by reason. Reassembly is bounded per peer and in total, so a member flooding
chunks costs memory only up to a fixed bound.

    DOCUMENT_DIGEST u8 kind | u8 count | { u8 doc_kind | u64 version | 16s digest }*
    DOCUMENT_CHUNK  u8 kind | u8 doc_kind | u64 version | u16 index | u16 count | bytes
"""

from __future__ import annotations

import contextlib
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gossipmesh.node.messages import MalformedNodeMessage
from gossipmesh.trust.document import (
    DIGEST_SIZE,
    MAX_DOCUMENT_SIZE,
    DocumentError,
    DocumentKind,
    DocumentRefusal,
    SignedDocument,
    accept_newer,
    decode_document,
)
from gossipmesh.wire import PayloadKind

CHUNK_BYTES = 1100
"""Document bytes per chunk: the chunk header keeps the message under MAX_MESSAGE_BYTES."""
MAX_CHUNKS = -(-MAX_DOCUMENT_SIZE // CHUNK_BYTES)
MAX_REASSEMBLIES = 16
"""Documents being received at once, from all peers together (the oldest is dropped)."""
REASSEMBLY_TIMEOUT = 30.0
PUSH_HOLDOFF = 2.0
"""Seconds before the same document is pushed to the same peer again."""
MAX_PUSHES_REMEMBERED = 512
"""(peer, kind, version) pushes kept for the holdoff; the table is emptied when full."""
ANNOUNCE_EVERY_ROUNDS = 6
"""Anti-entropy: digests to every neighbour every this many directory rounds (~30 s)."""

_DIGEST_ENTRY = struct.Struct(f"!BQ{DIGEST_SIZE}s")
_CHUNK_HEADER = struct.Struct("!BBQHH")


@dataclass(frozen=True, slots=True)
class DocumentDigest:
    kind: DocumentKind
    version: int
    digest: bytes


def encode_digests(digests: Iterable[DocumentDigest]) -> bytes:
    entries = list(digests)
    parts = [bytes([PayloadKind.DOCUMENT_DIGEST, len(entries)])]
    parts += [_DIGEST_ENTRY.pack(int(d.kind), d.version, d.digest) for d in entries]
    return b"".join(parts)


def decode_digests(data: bytes) -> list[DocumentDigest]:
    if len(data) < 2 or data[0] != PayloadKind.DOCUMENT_DIGEST:
        raise MalformedNodeMessage("not a DOCUMENT_DIGEST message")
    count = data[1]
    if len(data) != 2 + count * _DIGEST_ENTRY.size:
        raise MalformedNodeMessage("document digest length does not match its count")
    digests = []
    for index in range(count):
        kind, version, digest = _DIGEST_ENTRY.unpack_from(data, 2 + index * _DIGEST_ENTRY.size)
        try:
            digests.append(DocumentDigest(DocumentKind(kind), version, digest))
        except ValueError:
            continue  # a kind from a newer release: ignored, not an error
    return digests


def encode_chunks(document: SignedDocument) -> list[bytes]:
    data = document.encode()
    count = -(-len(data) // CHUNK_BYTES)
    return [
        _CHUNK_HEADER.pack(
            PayloadKind.DOCUMENT_CHUNK, int(document.kind), document.version, i, count
        )
        + data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
        for i in range(count)
    ]


def decode_chunk(data: bytes) -> tuple[int, int, int, int, bytes]:
    """(doc_kind, version, index, count, bytes) of a DOCUMENT_CHUNK."""
    if len(data) <= _CHUNK_HEADER.size or data[0] != PayloadKind.DOCUMENT_CHUNK:
        raise MalformedNodeMessage("not a DOCUMENT_CHUNK message")
    _, kind, version, index, count = _CHUNK_HEADER.unpack_from(data)
    if not 0 < count <= MAX_CHUNKS or index >= count:
        raise MalformedNodeMessage("chunk index or count out of range")
    if len(data) - _CHUNK_HEADER.size > CHUNK_BYTES:
        raise MalformedNodeMessage("chunk too large")
    return kind, version, index, count, data[_CHUNK_HEADER.size :]


@dataclass
class _Reassembly:
    version: int
    count: int
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)


@dataclass
class DocumentCounters:
    accepted: int = 0
    pushed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """By `DocumentRefusal` value: not_newer, bad_signature, wrong_authority, ..."""
    chunks_dropped: int = 0

    def refuse(self, reason: DocumentRefusal) -> None:
        self.refused[reason.value] = self.refused.get(reason.value, 0) + 1


class DocumentSync:
    """The newest verified document of each kind, and the gossip that spreads it."""

    def __init__(
        self,
        authority_public_key: bytes | None,
        send_control: Callable[[bytes, bytes], None],
        neighbours: Callable[[], Iterable[bytes]],
    ) -> None:
        self.authority_public_key = authority_public_key
        self._send_control = send_control
        self._neighbours = neighbours
        self.held: dict[DocumentKind, SignedDocument] = {}
        self.counters = DocumentCounters()
        self.check: Callable[[SignedDocument], None] = lambda document: None
        """More checks of a verified, newer document before it is kept (it must parse)."""
        self.on_accepted: Callable[[SignedDocument, bytes | None, float], None] = (
            lambda document, peer, now: None
        )
        """Called with each newly held document, the node it came from (None: local), now."""
        self._reassembly: OrderedDict[tuple[bytes, int], _Reassembly] = OrderedDict()
        self._pushed_at: dict[tuple[bytes, int, int], float] = {}
        self._rounds = 0

    # --- documents from this host ----------------------------------------------------

    def offer(self, data: bytes, now: float, source: bytes | None = None) -> SignedDocument:
        """Take an encoded document (a push, a saved file, a peer's); DocumentError if refused."""
        if self.authority_public_key is None:
            raise DocumentError(
                DocumentRefusal.WRONG_AUTHORITY,
                "this network has no authority (shared secret only)",
            )
        try:
            document = decode_document(data)
            held = self.held.get(document.kind)
            accepted = accept_newer(document, held, self.authority_public_key)
            self.check(accepted)
        except DocumentError as exc:
            self.counters.refuse(exc.reason)
            raise
        self.held[accepted.kind] = accepted
        self.counters.accepted += 1
        self.on_accepted(accepted, source, now)
        self.announce(exclude=source)
        return accepted

    # --- gossip --------------------------------------------------------------------------

    def digests(self) -> list[DocumentDigest]:
        return [DocumentDigest(d.kind, d.version, d.digest) for d in self.held.values()]

    def announce(self, exclude: bytes | None = None) -> None:
        """Our digests to every routing neighbour (after a change, and every few rounds)."""
        if not self.held:
            return
        message = encode_digests(self.digests())
        for neighbour in self._neighbours():
            if neighbour != exclude:
                self._send_control(neighbour, message)

    def greet(self, node_id: bytes) -> None:
        """A new neighbour: compare versions at once, not at the next anti-entropy round."""
        if self.held:
            self._send_control(node_id, encode_digests(self.digests()))

    def round(self, now: float) -> None:
        """Called every directory round: expire stale reassemblies, announce now and then."""
        for key in [k for k, r in self._reassembly.items() if now - r.started > REASSEMBLY_TIMEOUT]:
            del self._reassembly[key]
            self.counters.chunks_dropped += 1
        self._rounds += 1
        if self._rounds % ANNOUNCE_EVERY_ROUNDS == 0:
            self.announce()

    def on_digests(self, node_id: bytes, digests: list[DocumentDigest], now: float) -> None:
        theirs = {d.kind: d for d in digests}
        answer_with_ours = False
        for kind, document in self.held.items():
            their = theirs.get(kind)
            if their is None or their.version < document.version:
                self._push(node_id, document, now)
            elif their.version > document.version:
                answer_with_ours = True
        if any(kind not in self.held for kind in theirs):
            answer_with_ours = True
        if answer_with_ours and self.authority_public_key is not None:
            # Our older digest makes the neighbour push its newer document to us.
            self._send_control(node_id, encode_digests(self.digests()))

    def _push(self, node_id: bytes, document: SignedDocument, now: float) -> None:
        key = (node_id, int(document.kind), document.version)
        if now - self._pushed_at.get(key, float("-inf")) < PUSH_HOLDOFF:
            return
        if len(self._pushed_at) >= MAX_PUSHES_REMEMBERED:
            self._pushed_at.clear()  # only lets a push through early
        self._pushed_at[key] = now
        self.counters.pushed += 1
        for chunk in encode_chunks(document):
            self._send_control(node_id, chunk)

    def on_chunk(self, node_id: bytes, data: bytes, now: float) -> None:
        kind, version, index, count, body = decode_chunk(data)
        try:
            held = self.held.get(DocumentKind(kind))
        except ValueError:
            raise MalformedNodeMessage(f"unknown document kind {kind}") from None
        if self.authority_public_key is None or (held is not None and version <= held.version):
            self.counters.chunks_dropped += 1
            return
        key = (node_id, kind)
        assembly = self._reassembly.get(key)
        if assembly is None or assembly.version != version or assembly.count != count:
            assembly = _Reassembly(version, count, now)
            self._reassembly[key] = assembly
            while len(self._reassembly) > MAX_REASSEMBLIES:
                self._reassembly.popitem(last=False)
                self.counters.chunks_dropped += 1
        assembly.chunks[index] = body
        if len(assembly.chunks) < count:
            return
        del self._reassembly[key]
        encoded = b"".join(assembly.chunks[i] for i in range(count))
        with contextlib.suppress(DocumentError):  # counted by offer
            self.offer(encoded, now, source=node_id)
