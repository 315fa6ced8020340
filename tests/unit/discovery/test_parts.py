"""The discovery layer's small parts: sealing, verified storage, the peer cache, the clock hook."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from kademlia.crawling import ValueSpiderCrawl
from kademlia.node import Node

from gossipmesh.discovery.clock import LOOP_TIME, use_loop_clock
from gossipmesh.discovery.crawling import VerifiedValueCrawl, parse_node_list
from gossipmesh.discovery.peer_cache import (
    Peer,
    PeerCache,
    PeerCacheError,
    cache_path,
    load_peer_cache,
    save_peer_cache,
)
from gossipmesh.discovery.seal import SEAL_OVERHEAD, DatagramSeal, ReplayFilter
from gossipmesh.discovery.storage import RecordStorage
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.records import NodeRecord, RecordError, RefusalReason, name_key
from gossipmesh.wire import MessageType

NOW = 1_700_000_000.0
ALICE = Identity.from_seed(bytes(range(32)))


def record(sequence: int = 1, issued_at: int = int(NOW), lifetime: int = 60) -> NodeRecord:
    return NodeRecord(
        public_key=ALICE.public_key,
        sequence=sequence,
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
    ).signed(ALICE)


# --- sealing -----------------------------------------------------------------------


def test_seal_round_trip_and_refusals() -> None:
    seal = DatagramSeal(NetworkSecret(b"a" * 32).dht_key)
    sealed = seal.seal(b"\x00rpc")
    assert sealed[0] == MessageType.DHT and len(sealed) == 4 + SEAL_OVERHEAD
    assert seal.open(sealed) == b"\x00rpc"
    assert seal.seal(b"x") != seal.seal(b"x")  # fresh nonce each time
    other = DatagramSeal(NetworkSecret(b"b" * 32).dht_key)
    assert other.open(sealed) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert seal.open(tampered) is None
    assert seal.open(bytes([MessageType.TRANSPORT_DATA]) + sealed[1:]) is None
    assert seal.open(sealed[: SEAL_OVERHEAD - 1]) is None
    assert seal.open(b"") is None


def test_replayed_datagrams_are_recognised_for_one_to_two_windows() -> None:
    seal = DatagramSeal(NetworkSecret(b"a" * 32).dht_key)
    replays = ReplayFilter(window=60, capacity=1000)
    first, second = seal.seal(b"one"), seal.seal(b"two")
    assert not replays.is_replay(first, now=0)
    assert replays.is_replay(first, now=1)
    assert not replays.is_replay(second, now=59)
    assert replays.is_replay(first, now=61)  # rotated into the previous window
    assert replays.is_replay(second, now=119)
    assert not replays.is_replay(first, now=125)  # forgotten after two windows
    small = ReplayFilter(window=60, capacity=2)
    datagrams = [seal.seal(bytes([i])) for i in range(5)]
    assert not any(small.is_replay(d, now=0) for d in datagrams)  # memory stays bounded
    assert small.is_replay(datagrams[4], now=0)


# --- storage -----------------------------------------------------------------------


class Clocks:
    def __init__(self) -> None:
        self.wall = NOW
        self.loop = 100.0


def storage(clocks: Clocks, capacity: int = 10) -> RecordStorage:
    return RecordStorage(lambda: clocks.wall, lambda: clocks.loop, capacity)


def refusal(store: RecordStorage, key: bytes, value: object) -> RefusalReason:
    with pytest.raises(RecordError) as excinfo:
        store.offer(key, value)
    return excinfo.value.reason


def test_storage_verifies_key_sequence_and_expiry() -> None:
    clocks = Clocks()
    store = storage(clocks)
    key = ALICE.node_id
    first, second = record(1), record(2)
    assert not store  # empty, yet kademlia's `storage or Forgetful...` must not bite (server)
    assert store.offer(key, first.encode())
    assert not store.offer(key, first.encode())  # a refresh changes nothing
    assert refusal(store, name_key("alice"), first.encode()) is RefusalReason.WRONG_KEY
    assert store.offer(key, second.encode())
    assert refusal(store, key, first.encode()) is RefusalReason.STALE_SEQUENCE
    assert refusal(store, key, "text") is RefusalReason.MALFORMED
    assert refusal(store, key, b"\x01\x01junk") is RefusalReason.MALFORMED
    assert store.get(key) == second.encode() and list(store) == [(key, second.encode())]
    clocks.loop += 10
    assert store.iter_older_than(5) == [(key, second.encode())]
    assert store.iter_older_than(20) == []
    clocks.wall = second.expires_at
    assert store.get(key) is None and list(store) == [] and key not in store


def test_storage_is_bounded() -> None:
    clocks = Clocks()
    store = storage(clocks, capacity=1)
    store.offer(ALICE.node_id, record().encode())
    bob = Identity.from_seed(bytes(range(2, 34)))
    bobs = NodeRecord(bob.public_key, 1, int(NOW), int(NOW) + 600).signed(bob)
    assert refusal(store, bob.node_id, bobs.encode()) is RefusalReason.STORAGE_FULL
    clocks.wall = NOW + 61  # Alice's record expired: room again
    assert store.offer(bob.node_id, bobs.encode())


# --- the lookup path against malicious replies -----------------------------------------


class _StubProtocol:
    source_node = Node(bytes(20))

    def background(self, coroutine: object) -> None:
        raise AssertionError("no store-back expected")


def test_stock_kademlia_crawl_raises_where_ours_does_not() -> None:
    """DESIGN.md's finding, checked: one peer's unhashable 'value' makes kademlia raise."""
    peers = [Node(bytes([i]) * 20, "127.0.0.1", 1000 + i) for i in (1, 2)]
    replies = {
        peers[0].id: (True, {"value": [1, 2]}),
        peers[1].id: (True, [[b"short", "1.2.3.4", 5], "junk", [bytes(20), "not-an-ip", 1]]),
    }
    stock = ValueSpiderCrawl(_StubProtocol(), Node(bytes(20)), peers, 20, 3)
    with pytest.raises(TypeError):
        asyncio.run(stock._nodes_found(dict(replies)))

    refused: list[object] = []

    def accept(value: object) -> None:
        refused.append(value)
        return None

    ours = VerifiedValueCrawl(_StubProtocol(), Node(bytes(20)), peers, 20, 3, accept)
    for peer in peers:
        ours.nearest.mark_contacted(peer)
    assert asyncio.run(ours._nodes_found(dict(replies))) is None
    assert refused == [[1, 2]]


def test_node_lists_are_parsed_entry_by_entry() -> None:
    good = [bytes(range(20)), "127.0.0.1", 4000]
    own = [bytes(20), "127.0.0.1", 4001]
    payload = [good, own, [1, 2, 3], [bytes(20), "127.0.0.1", 0], [bytes(19), "::1", 1], "x"]
    nodes = parse_node_list(payload, exclude_id=bytes(20))
    assert [(n.id, n.ip, n.port) for n in nodes] == [tuple(good)]
    assert parse_node_list({"value": 1}, bytes(20)) == []


# --- peer cache ---------------------------------------------------------------------


def test_peer_cache_round_trip_is_plain_json(tmp_path: Path) -> None:
    cache = PeerCache(ALICE.node_id, 42, (Peer(bytes(range(20)), "127.0.0.1", 5000),))
    save_peer_cache(tmp_path, cache)
    content = json.loads(cache_path(tmp_path).read_text())
    assert content["last_sequence"] == 42 and content["peers"][0]["port"] == 5000
    assert load_peer_cache(tmp_path) == cache
    assert load_peer_cache(tmp_path / "absent") is None


@pytest.mark.parametrize(
    "content",
    [
        b"\x80\x04pickle",
        b"{",
        b"[]",
        b'{"version": 1}',
        b'{"version": 1, "node_id": "zz", "last_sequence": 1, "peers": []}',
        b'{"version": 1, "node_id": "' + b"00" * 20 + b'", "last_sequence": 1, "peers": "x"}',
        b'{"version": 1, "node_id": "' + b"00" * 20 + b'", "last_sequence": 1, '
        b'"peers": [{"node_id": "' + b"00" * 20 + b'", "host": "h", "port": 1}]}',
    ],
)
def test_corrupt_peer_cache_is_an_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    cache_path(tmp_path).write_bytes(content)
    with pytest.raises(PeerCacheError, match=r"peers\.json"):
        load_peer_cache(tmp_path)


# --- clock hook -------------------------------------------------------------------------


def test_kademlia_reads_the_running_loops_clock() -> None:
    import kademlia.routing

    use_loop_clock()

    class ShiftedLoop(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return super().time() + 1_000_000.0

    async def bucket_time() -> float:
        bucket = kademlia.routing.KBucket(0, 2**160, 20)
        return float(bucket.last_updated)

    loop = ShiftedLoop()
    try:
        stamped = loop.run_until_complete(bucket_time())
        assert abs(stamped - loop.time()) < 5
    finally:
        loop.close()
    assert kademlia.routing.time is LOOP_TIME


# --- replication to newcomers ----------------------------------------------------------


class _RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent.append((data, addr))


def test_a_newcomer_is_handed_our_records_once_and_stays_routable() -> None:
    from gossipmesh.discovery.protocol import RecordProtocol
    from gossipmesh.discovery.stats import DiscoveryStats

    async def body() -> None:
        loop = asyncio.get_running_loop()
        clocks = Clocks()
        store = RecordStorage(lambda: clocks.wall, loop.time)
        store.offer(ALICE.node_id, record().encode())
        protocol = RecordProtocol(Node(bytes(20)), store, 20, DiscoveryStats(), 1.0)
        transport = _RecordingTransport()
        protocol.connection_made(transport)
        newcomer = Node(ALICE.node_id[:19] + b"\x00", "127.0.0.1", 4000)

        protocol.welcome_if_new(newcomer)
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(transport.sent) == 1  # the one record, pushed to the newcomer
        # kademlia calls it "new" again once out of the main list (a replacement-list
        # node is "new" on every RPC): no second push, but it is routable again.
        protocol.router.remove_contact(newcomer)
        protocol.welcome_if_new(newcomer)
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(transport.sent) == 1
        assert not protocol.router.is_new_node(newcomer)
        protocol.cancel_all()

    asyncio.run(body())
