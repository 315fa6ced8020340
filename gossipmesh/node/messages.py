"""Node-level control payloads: record exchange between neighbours and mesh ping.

Every message is a decrypted transport payload whose first byte is a
`wire.PayloadKind`; control payloads are never padded, so a decoder refuses
any byte after the message.

    NODE_RECORDS   u8 kind | u8 count | { u16 length | record }*
    RECORD_REQUEST u8 kind | u8 count | { 20s node id }*
    RECORD_DIGEST  u8 kind | u8 count | { 20s node id | u64 sequence }*
    ECHO_REQUEST   u8 kind | u64 nonce
    ECHO_REPLY     u8 kind | u64 nonce
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from gossipmesh.identity import NODE_ID_SIZE
from gossipmesh.wire import PayloadKind

MAX_MESSAGE_BYTES = 1200
"""Control messages stay well under the MTU, so one never needs fragmenting."""
MAX_IDS_PER_REQUEST = 50
_DIGEST_ENTRY = struct.Struct(f"!{NODE_ID_SIZE}sQ")
MAX_DIGEST_ENTRIES = (MAX_MESSAGE_BYTES - 2) // _DIGEST_ENTRY.size
_ECHO = struct.Struct("!BQ")


class MalformedNodeMessage(ValueError):
    """A node-level control payload could not be decoded."""


def _at_end(data: bytes, offset: int) -> None:
    if offset != len(data):
        raise MalformedNodeMessage("trailing bytes after the message")


def encode_records(records: Iterable[bytes]) -> list[bytes]:
    """Pack encoded records into as few NODE_RECORDS messages as fit the size bound."""
    messages: list[bytes] = []
    batch: list[bytes] = []
    size = 2
    for record in records:
        if 2 + 2 + len(record) > MAX_MESSAGE_BYTES:
            continue  # cannot be sent this way; the DHT still serves it
        if batch and (size + 2 + len(record) > MAX_MESSAGE_BYTES or len(batch) == 255):
            messages.append(_records_message(batch))
            batch, size = [], 2
        batch.append(record)
        size += 2 + len(record)
    if batch:
        messages.append(_records_message(batch))
    return messages


def _records_message(batch: Sequence[bytes]) -> bytes:
    parts = [bytes([PayloadKind.NODE_RECORDS, len(batch)])]
    for record in batch:
        parts.append(struct.pack("!H", len(record)) + record)
    return b"".join(parts)


def decode_records(data: bytes) -> list[bytes]:
    if len(data) < 2 or data[0] != PayloadKind.NODE_RECORDS:
        raise MalformedNodeMessage("not a NODE_RECORDS message")
    count, offset, records = data[1], 2, []
    for _ in range(count):
        if offset + 2 > len(data):
            raise MalformedNodeMessage("truncated record length")
        (length,) = struct.unpack_from("!H", data, offset)
        offset += 2
        if offset + length > len(data):
            raise MalformedNodeMessage("truncated record")
        records.append(data[offset : offset + length])
        offset += length
    _at_end(data, offset)
    return records


def encode_record_request(node_ids: Sequence[bytes]) -> bytes:
    ids = list(node_ids)[:MAX_IDS_PER_REQUEST]
    if any(len(node_id) != NODE_ID_SIZE for node_id in ids):
        raise ValueError("node ids are 20 bytes")
    return bytes([PayloadKind.RECORD_REQUEST, len(ids)]) + b"".join(ids)


def decode_record_request(data: bytes) -> list[bytes]:
    if len(data) < 2 or data[0] != PayloadKind.RECORD_REQUEST:
        raise MalformedNodeMessage("not a RECORD_REQUEST message")
    count = data[1]
    if count > MAX_IDS_PER_REQUEST:
        raise MalformedNodeMessage("too many ids")
    end = 2 + count * NODE_ID_SIZE
    if end > len(data):
        raise MalformedNodeMessage("truncated request")
    _at_end(data, end)
    return [data[i : i + NODE_ID_SIZE] for i in range(2, end, NODE_ID_SIZE)]


def encode_echo(kind: PayloadKind, nonce: int) -> bytes:
    return _ECHO.pack(kind, nonce)


def decode_echo(data: bytes) -> tuple[PayloadKind, int]:
    if len(data) < _ECHO.size or data[0] not in (PayloadKind.ECHO_REQUEST, PayloadKind.ECHO_REPLY):
        raise MalformedNodeMessage("not an echo message")
    kind, nonce = _ECHO.unpack_from(data)
    _at_end(data, _ECHO.size)
    return PayloadKind(kind), nonce


def encode_digest(entries: Iterable[tuple[bytes, int]]) -> list[bytes]:
    """(node id, sequence) of every record held, in RECORD_DIGEST messages of bounded size."""
    packed = [_DIGEST_ENTRY.pack(node_id, sequence) for node_id, sequence in entries]
    return [
        bytes([PayloadKind.RECORD_DIGEST, len(chunk)]) + b"".join(chunk)
        for chunk in (
            packed[i : i + MAX_DIGEST_ENTRIES] for i in range(0, len(packed), MAX_DIGEST_ENTRIES)
        )
    ]


def decode_digest(data: bytes) -> list[tuple[bytes, int]]:
    if len(data) < 2 or data[0] != PayloadKind.RECORD_DIGEST:
        raise MalformedNodeMessage("not a RECORD_DIGEST message")
    count = data[1]
    if count > MAX_DIGEST_ENTRIES:
        raise MalformedNodeMessage("too many digest entries")
    end = 2 + count * _DIGEST_ENTRY.size
    if end > len(data):
        raise MalformedNodeMessage("truncated digest")
    _at_end(data, end)
    return [_DIGEST_ENTRY.unpack_from(data, offset) for offset in range(2, end, _DIGEST_ENTRY.size)]
