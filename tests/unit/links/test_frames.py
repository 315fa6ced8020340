"""The stream-link frame codec: sealing, reassembly from a byte stream, and what must fail."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmesh.links import frames
from gossipmesh.links.frames import (
    MAX_PLAINTEXT,
    TAG_SIZE,
    FrameOpener,
    FrameSealer,
    LinkError,
    split_items,
)
from tests.unit.links.support import tun_frame

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def items_of(plaintexts: list[bytes]) -> list[bytes]:
    return [bytes(item) for plaintext in plaintexts for item in split_items(plaintext)]


def sealed_frames(sealer: FrameSealer, batches: list[list[bytes]]) -> list[bytes]:
    """Each link frame (header + ciphertext) as one bytes object, in order."""
    out: list[bytes] = []
    for batch in batches:
        buffers = sealer.seal(batch)
        out.extend(buffers[i] + buffers[i + 1] for i in range(0, len(buffers), 2))
    return out


# --- round trips -------------------------------------------------------------------------


def test_round_trip_over_many_tun_frames() -> None:
    tun_frames = [tun_frame(bytes([n % 251]) * (n * 37 % 9000)) for n in range(300)]
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    stream = b"".join(sealer.seal(tun_frames))
    plaintexts = opener.feed(stream)
    assert items_of(plaintexts) == tun_frames
    assert opener.counter == sealer.counter == len(plaintexts)
    assert opener.buffered == 0


def test_successive_seals_continue_the_counter_and_open_in_order() -> None:
    sealer, opener = FrameSealer(KEY), FrameOpener(KEY)
    batches = [[tun_frame(bytes([n]) * 100)] * (n + 1) for n in range(10)]
    got: list[bytes] = []
    for batch in batches:
        got.extend(items_of(opener.feed(b"".join(sealer.seal(batch)))))
    assert got == [frame for batch in batches for frame in batch]
    assert sealer.counter == opener.counter == 10


def test_each_frame_header_gives_its_ciphertext_length() -> None:
    buffers = FrameSealer(KEY).seal([tun_frame(b"x" * 500)] * 3)
    assert len(buffers) == 2
    (length,) = struct.unpack("!I", buffers[0])
    assert length == len(buffers[1]) == 3 * (2 + 10 + 20 + 500) + TAG_SIZE


def test_seal_of_nothing_is_nothing() -> None:
    sealer = FrameSealer(KEY)
    assert sealer.seal([]) == []
    assert sealer.counter == 0


def largest_frame() -> bytes:
    return tun_frame(bytes(0xFFFF - 20))


def test_frames_split_at_max_plaintext() -> None:
    big = largest_frame()  # 10 + 65,535 bytes
    assert len(big) == 10 + 0xFFFF
    tun_frames = [big] * 9
    sealer = FrameSealer(KEY)
    buffers = sealer.seal(tun_frames)
    plaintexts = FrameOpener(KEY).feed(b"".join(buffers))
    per_item = 2 + len(big)
    fit = MAX_PLAINTEXT // per_item  # 3 such items per frame
    assert [len(p) for p in plaintexts] == [fit * per_item] * 3
    assert all(len(c) <= MAX_PLAINTEXT + TAG_SIZE for c in buffers[1::2])
    assert items_of(plaintexts) == tun_frames


def test_items_that_fill_max_plaintext_exactly_share_one_frame() -> None:
    # Four items whose headers and frames add up to exactly MAX_PLAINTEXT.
    item_total = MAX_PLAINTEXT // 4
    frame = tun_frame(bytes(item_total - 2 - 10 - 20))
    assert 4 * (2 + len(frame)) == MAX_PLAINTEXT
    plaintexts = FrameOpener(KEY).feed(b"".join(FrameSealer(KEY).seal([frame] * 4)))
    assert [len(p) for p in plaintexts] == [MAX_PLAINTEXT]
    one_more = FrameOpener(KEY).feed(b"".join(FrameSealer(KEY).seal([frame] * 4 + [tun_frame()])))
    assert [len(p) for p in one_more] == [MAX_PLAINTEXT, 2 + 30]


def test_an_item_whose_length_prefix_would_overflow_goes_to_the_next_frame() -> None:
    big = largest_frame()
    last = tun_frame(bytes(MAX_PLAINTEXT - 3 * (2 + len(big)) - 10 - 20))
    assert 3 * (2 + len(big)) + len(last) == MAX_PLAINTEXT  # its 2-byte prefix does not fit
    plaintexts = FrameOpener(KEY).feed(b"".join(FrameSealer(KEY).seal([big] * 3 + [last])))
    assert [len(p) for p in plaintexts] == [3 * (2 + len(big)), 2 + len(last)]


@pytest.mark.parametrize("size", [0, 10, 10 + 19, 10 + 0x10000])
def test_seal_refuses_a_frame_that_is_not_a_header_and_one_packet(size: int) -> None:
    with pytest.raises(ValueError):
        FrameSealer(KEY).seal([bytes(size)])


def test_seal_accepts_the_smallest_and_largest_packet() -> None:
    smallest = tun_frame()
    assert len(smallest) == 30
    plaintexts = FrameOpener(KEY).feed(b"".join(FrameSealer(KEY).seal([smallest, largest_frame()])))
    assert items_of(plaintexts) == [smallest, largest_frame()]


def test_counter_exhaustion_refuses_to_seal() -> None:
    sealer = FrameSealer(KEY)
    sealer.counter = frames.MAX_COUNTER
    with pytest.raises(LinkError):
        sealer.seal([tun_frame()])


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_keys_are_32_bytes(size: int) -> None:
    with pytest.raises(ValueError):
        FrameSealer(bytes(size))
    with pytest.raises(ValueError):
        FrameOpener(bytes(size))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40),
    batch_cuts=st.lists(st.integers(0, 40), max_size=5),
    chunk_sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=50),
)
def test_opener_fed_in_arbitrary_chunks_yields_the_same_plaintexts(
    sizes: list[int], batch_cuts: list[int], chunk_sizes: list[int]
) -> None:
    tun_frames = [tun_frame(bytes([n % 256]) * size) for n, size in enumerate(sizes)]
    cuts = sorted({0, len(tun_frames), *(min(c, len(tun_frames)) for c in batch_cuts)})
    sealer = FrameSealer(KEY)
    stream = b"".join(
        b"".join(sealer.seal(tun_frames[start:end])) for start, end in itertools.pairwise(cuts)
    )
    whole = FrameOpener(KEY).feed(stream)
    opener = FrameOpener(KEY)
    pieces: list[bytes] = []
    offset = 0
    index = 0
    while offset < len(stream):
        size = chunk_sizes[index % len(chunk_sizes)]
        index += 1
        # The runtime hands over a view of a buffer it reuses: the opener must copy.
        scratch = bytearray(stream[offset : offset + size])
        pieces.extend(opener.feed(memoryview(scratch)))
        scratch[:] = bytes(len(scratch))
        offset += size
    assert pieces == whole
    assert items_of(pieces) == tun_frames
    assert opener.buffered == 0


# --- what must fail ----------------------------------------------------------------------


def opened_until_error(opener: FrameOpener, chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """Plaintexts returned before a LinkError, and whether one came."""
    got: list[bytes] = []
    for chunk in chunks:
        try:
            got.extend(opener.feed(chunk))
        except LinkError:
            return got, True
    return got, False


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_flipped_bit_anywhere_ends_the_link(data: st.DataObject) -> None:
    good = FrameSealer(KEY).seal([tun_frame(b"payload" * 40), tun_frame(b"more" * 3)])
    stream = bytearray(b"".join(good))
    bit = data.draw(st.integers(0, len(stream) * 8 - 1))
    stream[bit // 8] ^= 1 << (bit % 8)
    # A corrupted length may claim more bytes than arrived: more data must then fail too.
    filler = bytes(MAX_PLAINTEXT + TAG_SIZE + 4)
    got, failed = opened_until_error(FrameOpener(KEY), [bytes(stream), filler])
    assert failed
    assert got == []


def test_a_flipped_bit_in_the_second_frame_spares_the_first() -> None:
    sealer = FrameSealer(KEY)
    first, second = sealed_frames(sealer, [[tun_frame(b"a")], [tun_frame(b"b")]])
    corrupt = bytearray(second)
    corrupt[-1] ^= 0x80
    opener = FrameOpener(KEY)
    assert items_of(opener.feed(first)) == [tun_frame(b"a")]
    with pytest.raises(LinkError):
        opener.feed(bytes(corrupt))


def test_a_replayed_frame_fails() -> None:
    (frame,) = sealed_frames(FrameSealer(KEY), [[tun_frame(b"once")]])
    opener = FrameOpener(KEY)
    assert len(opener.feed(frame)) == 1
    with pytest.raises(LinkError):
        opener.feed(frame)


def test_a_dropped_frame_fails() -> None:
    first, second, third = sealed_frames(
        FrameSealer(KEY), [[tun_frame(b"1")], [tun_frame(b"2")], [tun_frame(b"3")]]
    )
    opener = FrameOpener(KEY)
    assert len(opener.feed(first)) == 1
    with pytest.raises(LinkError):
        opener.feed(third)
    with pytest.raises(LinkError):
        FrameOpener(KEY).feed(second)


def test_reordered_frames_fail() -> None:
    first, second = sealed_frames(FrameSealer(KEY), [[tun_frame(b"1")], [tun_frame(b"2")]])
    with pytest.raises(LinkError):
        FrameOpener(KEY).feed(second + first)
    assert len(FrameOpener(KEY).feed(first + second)) == 2


def test_a_wrong_key_fails() -> None:
    (frame,) = sealed_frames(FrameSealer(KEY), [[tun_frame(b"secret")]])
    with pytest.raises(LinkError):
        FrameOpener(OTHER_KEY).feed(frame)


def test_the_other_directions_key_fails() -> None:
    """Each direction has its own key; a frame sent back with the wrong one is refused."""
    (frame,) = sealed_frames(FrameSealer(OTHER_KEY), [[tun_frame(b"x")]])
    with pytest.raises(LinkError):
        FrameOpener(KEY).feed(frame)


@pytest.mark.parametrize("length", [0, 1, TAG_SIZE - 1])
def test_a_length_below_the_tag_fails_at_once(length: int) -> None:
    with pytest.raises(LinkError):
        FrameOpener(KEY).feed(struct.pack("!I", length))


@pytest.mark.parametrize("length", [MAX_PLAINTEXT + TAG_SIZE + 1, 0xFFFFFFFF])
def test_a_length_above_the_limit_fails_at_once(length: int) -> None:
    with pytest.raises(LinkError):
        FrameOpener(KEY).feed(struct.pack("!I", length))


@pytest.mark.parametrize("length", [TAG_SIZE, MAX_PLAINTEXT + TAG_SIZE])
def test_lengths_at_the_limits_wait_for_their_bytes(length: int) -> None:
    opener = FrameOpener(KEY)
    assert opener.feed(struct.pack("!I", length)) == []
    assert opener.buffered == 4
    with pytest.raises(LinkError):  # the bytes arrive but were never sealed with the key
        opener.feed(bytes(length))


def test_a_header_alone_or_in_pieces_waits() -> None:
    (frame,) = sealed_frames(FrameSealer(KEY), [[tun_frame(b"slow")]])
    opener = FrameOpener(KEY)
    for byte in frame[:-1]:
        assert opener.feed(bytes([byte])) == []
    assert opener.buffered == len(frame) - 1
    assert items_of(opener.feed(frame[-1:])) == [tun_frame(b"slow")]


# --- items -------------------------------------------------------------------------------


def test_split_items_of_nothing_is_nothing() -> None:
    assert split_items(b"") == []


def item(frame: bytes) -> bytes:
    return struct.pack("!H", len(frame) - 10) + frame


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\x00",  # half an item header
        b"\x00\x14" + bytes(9),  # the virtio header cut short
        item(tun_frame())[:-1],  # the packet cut short
        item(tun_frame()) + b"\x00",  # a good item, then a fragment
        item(tun_frame()) + item(tun_frame(b"x" * 40))[:-5],
        b"\x00\x13" + bytes(10 + 19),  # a packet shorter than an IPv4 header
        b"\x00\x00" + bytes(10),  # an empty packet
        b"\xff\xff" + bytes(100),  # claims more than there is
    ],
)
def test_split_items_rejects_truncated_and_short_items(plaintext: bytes) -> None:
    with pytest.raises(LinkError):
        split_items(plaintext)


def test_split_items_returns_each_frame_whole() -> None:
    tun_frames = [tun_frame(b"a" * n) for n in (0, 1, 1000)]
    plaintext = b"".join(item(f) for f in tun_frames)
    assert [bytes(v) for v in split_items(plaintext)] == tun_frames


# --- preamble ------------------------------------------------------------------------------


def test_preamble_round_trip() -> None:
    token = bytes(range(16))
    data = frames.preamble(token)
    assert len(data) == frames.PREAMBLE_SIZE == 24
    assert data.startswith(frames.MAGIC)
    assert frames.parse_preamble(data) == token


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_preamble_needs_a_16_byte_token(size: int) -> None:
    with pytest.raises(ValueError):
        frames.preamble(bytes(size))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        frames.MAGIC,
        frames.MAGIC + bytes(15),
        frames.MAGIC + bytes(17),
        b"GMLINK\x00\x02" + bytes(16),  # another version
        b"HTTP/1.1 200 OK\r\n" + bytes(7),
        bytes(24),
    ],
)
def test_parse_preamble_rejects_anything_else(data: bytes) -> None:
    with pytest.raises(LinkError):
        frames.parse_preamble(data)
