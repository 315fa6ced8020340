"""The bytes on a stream link: a preamble, then length-prefixed sealed frames.

    preamble   8s magic "GMLINK\\x00\\x01" | 16s token          (connector -> acceptor, once)
    frame      u32 ciphertext length | ChaCha20-Poly1305 ciphertext
    plaintext  { u16 packet length | 10s virtio_net_hdr | packet }*

Each direction has its own random 32-byte key, handed over inside the
authenticated WireGuard session that negotiated the link, and a frame
counter that starts at 0 and steps by one per frame: the nonce is 4 zero
bytes and the counter (little-endian), as in WireGuard. TCP delivers frames
in order, so the receiver expects exactly the next counter; a replayed,
dropped or reordered frame fails to open and ends the link. Items carry the
TUN's own virtio_net_hdr so a TCP super-packet crosses whole and the
receiving kernel accepts it as one unit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC: Final = b"GMLINK\x00\x01"
TOKEN_SIZE: Final = 16
KEY_SIZE: Final = 32
PREAMBLE_SIZE: Final = len(MAGIC) + TOKEN_SIZE
TAG_SIZE: Final = 16
FRAME_HEADER: Final = struct.Struct("!I")
ITEM_HEADER: Final = struct.Struct("!H")
VNET_SIZE: Final = 10
MIN_PACKET: Final = 20
"""No IP packet is shorter than an IPv4 header."""
MAX_PLAINTEXT: Final = 256 * 1024
"""Frames stay below this, so a reader never buffers more than one such frame."""
MAX_COUNTER: Final = (1 << 64) - 1
_ZERO_NONCE_PREFIX: Final = bytes(4)


class LinkError(ValueError):
    """A stream link received bytes it cannot accept; the link must close."""


def preamble(token: bytes) -> bytes:
    if len(token) != TOKEN_SIZE:
        raise ValueError("a link token is 16 bytes")
    return MAGIC + token


def parse_preamble(data: bytes) -> bytes:
    """The token of a complete preamble, or LinkError for anything else."""
    if len(data) != PREAMBLE_SIZE or not data.startswith(MAGIC):
        raise LinkError("not a gossipmesh stream link")
    return bytes(data[len(MAGIC) :])


def _nonce(counter: int) -> bytes:
    return _ZERO_NONCE_PREFIX + counter.to_bytes(8, "little")


class FrameSealer:
    """Seals TUN frames (virtio_net_hdr + packet) into link frames, one counter per frame."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("a link key is 32 bytes")
        self._encrypt = ChaCha20Poly1305(key).encrypt
        self.counter = 0

    def seal(self, tun_frames: Iterable[bytes]) -> list[bytes]:
        """[header, ciphertext] per frame for the given TUN frames, split at MAX_PLAINTEXT."""
        out: list[bytes] = []
        parts: list[bytes] = []
        size = 0
        pack = ITEM_HEADER.pack
        for tun_frame in tun_frames:
            length = len(tun_frame) - VNET_SIZE
            if length < MIN_PACKET or length > 0xFFFF:
                raise ValueError("a TUN frame holds a 10-byte header and one IP packet")
            if size and size + 2 + len(tun_frame) > MAX_PLAINTEXT:
                self._seal_into(out, parts)
                parts, size = [], 0
            parts.append(pack(length))
            parts.append(tun_frame)
            size += 2 + len(tun_frame)
        if parts:
            self._seal_into(out, parts)
        return out

    def _seal_into(self, out: list[bytes], parts: list[bytes]) -> None:
        if self.counter >= MAX_COUNTER:
            raise LinkError("link counter exhausted")
        ciphertext = self._encrypt(_nonce(self.counter), b"".join(parts), None)
        self.counter += 1
        out.append(FRAME_HEADER.pack(len(ciphertext)))
        out.append(ciphertext)


class FrameOpener:
    """Reassembles link frames from a byte stream and opens them in order."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("a link key is 32 bytes")
        self._decrypt = ChaCha20Poly1305(key).decrypt
        self._buffer = bytearray()
        self.counter = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The plaintexts of every frame `data` completes; LinkError ends the link."""
        buffer = self._buffer
        buffer += data
        plaintexts: list[bytes] = []
        offset = 0
        available = len(buffer)
        view = memoryview(buffer)
        try:
            while available - offset >= FRAME_HEADER.size:
                (length,) = FRAME_HEADER.unpack_from(buffer, offset)
                if length < TAG_SIZE or length > MAX_PLAINTEXT + TAG_SIZE:
                    raise LinkError(f"frame length {length} out of range")
                start = offset + FRAME_HEADER.size
                end = start + length
                if end > available:
                    break
                try:
                    plaintexts.append(self._decrypt(_nonce(self.counter), view[start:end], None))
                except InvalidTag:
                    raise LinkError("frame failed authentication") from None
                self.counter += 1
                offset = end
        finally:
            view.release()
        if offset:
            del buffer[:offset]
        return plaintexts


def split_items(plaintext: bytes) -> list[memoryview]:
    """The TUN frames (virtio_net_hdr + packet) of an opened frame; LinkError if malformed."""
    view = memoryview(plaintext)
    items: list[memoryview] = []
    offset = 0
    total = len(plaintext)
    unpack = ITEM_HEADER.unpack_from
    while offset < total:
        if offset + ITEM_HEADER.size + VNET_SIZE > total:
            raise LinkError("truncated item header")
        (length,) = unpack(plaintext, offset)
        start = offset + ITEM_HEADER.size
        end = start + VNET_SIZE + length
        if length < MIN_PACKET or end > total:
            raise LinkError("bad item length")
        items.append(view[start:end])
        offset = end
    return items
