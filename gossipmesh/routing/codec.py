"""Shared pieces of the routing layer's wire formats.

Every control message the routing layer emits is versioned and fits one
WireGuard transport message on a 1,280-byte-MTU path, so each encoded
payload stays under `MAX_CONTROL_PAYLOAD`. Parsers raise exactly one error
type, `MalformedMessage`, for any input they cannot accept, so the node can
drop and count bad input without catching a zoo of exceptions.
"""

from __future__ import annotations

import struct

PROTOCOL_VERSION = 1
"""Second byte of every routing control payload; a different value is refused."""

MAX_CONTROL_PAYLOAD = 1200
"""Upper bound of one encoded control payload (leaves room for WireGuard, UDP, IPv6)."""

NODE_ID_SIZE = 20


class MalformedMessage(ValueError):
    """Bytes that are not a valid routing control message or record (drop and count)."""


class Reader:
    """A bounds-checked cursor over bytes: every read past the end is `MalformedMessage`."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self._data = data
        self._offset = offset

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if size < 0 or end > len(self._data):
            raise MalformedMessage("truncated message")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack("!Q", self.take(8))[0]
        return value

    def node_id(self) -> bytes:
        return self.take(NODE_ID_SIZE)

    def rest(self) -> bytes:
        chunk = self._data[self._offset :]
        self._offset = len(self._data)
        return chunk

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def finish(self) -> None:
        """Refuse trailing bytes: encodings are canonical, one value has one form."""
        if self._offset != len(self._data):
            raise MalformedMessage("trailing bytes after message")


def check_header(data: bytes, kind: int) -> Reader:
    """Check the kind and version bytes and return a reader positioned after them."""
    if len(data) > MAX_CONTROL_PAYLOAD:
        raise MalformedMessage(f"control payload of {len(data)} bytes exceeds the bound")
    reader = Reader(data)
    if reader.u8() != kind:
        raise MalformedMessage("wrong payload kind")
    version = reader.u8()
    if version != PROTOCOL_VERSION:
        raise MalformedMessage(f"unsupported routing protocol version {version}")
    return reader
