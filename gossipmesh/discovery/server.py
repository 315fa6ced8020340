"""kademlia's `Server`, with store and fetch that report outcomes instead of raising.

Why not `Server.set`/`get` as they are: keys go through SHA-1 of their text
(ours are already 20-byte node ids and name hashes); `set` raises `ValueError`
(`max()` of nothing) when no peer answers the node lookup, and returns True
even when every peer refused the store, since it tests the truthiness of
(answered, result) tuples; `get` returns an unverified value and raises on a
malicious reply. `bootstrap_node` trusts the id in a ping reply. Here
`store` returns a `StoreResult` counting the peers that really stored,
`fetch` returns a verified record or None, and replies are checked.
Everything else (routing table, crawls, refresh) is kademlia's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kademlia.network import Server
from kademlia.node import Node

from gossipmesh.discovery.crawling import SafeNodeCrawl, VerifiedValueCrawl
from gossipmesh.discovery.protocol import RecordProtocol
from gossipmesh.discovery.stats import DiscoveryStats
from gossipmesh.discovery.storage import RecordStorage
from gossipmesh.identity import NODE_ID_SIZE
from gossipmesh.records import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    """How one record's publication went."""

    peers_asked: int
    peers_stored: int
    """Peers that answered the store with 'stored' (refusals and silence are not counted)."""

    @property
    def ok(self) -> bool:
        return self.peers_stored > 0


class RecordServer(Server):  # type: ignore[misc]
    """A kademlia node over `RecordProtocol` and `RecordStorage`; I/O is injected."""

    def __init__(
        self,
        node_id: bytes,
        storage: RecordStorage,
        stats: DiscoveryStats,
        accept: Callable[[bytes, object], Record | None],
        ksize: int,
        alpha: int,
        rpc_timeout: float,
    ) -> None:
        super().__init__(ksize=ksize, alpha=alpha, node_id=node_id, storage=storage)
        # Server does `storage or ForgetfulStorage()`, and an empty storage is falsy.
        self.storage = storage
        self._stats = stats
        self._accept = accept
        self._rpc_timeout = rpc_timeout
        self.protocol = self._create_protocol()

    def _create_protocol(self) -> RecordProtocol:
        return RecordProtocol(self.node, self.storage, self.ksize, self._stats, self._rpc_timeout)

    async def bootstrap(self, addrs: Iterable[tuple[str, int]]) -> list[Node]:
        """Ping every address, then look ourselves up through those that answered."""
        gathered = await asyncio.gather(*(self.bootstrap_node(addr) for addr in addrs))
        nodes = [node for node in gathered if node is not None]
        if not nodes:
            return []
        spider = SafeNodeCrawl(self.protocol, self.node, nodes, self.ksize, self.alpha)
        found: list[Node] = await spider.find()
        return found

    async def bootstrap_node(self, addr: tuple[str, int]) -> Node | None:
        answered, node_id = await self.protocol.ping(addr, self.node.id)
        if not answered or not isinstance(node_id, bytes) or len(node_id) != NODE_ID_SIZE:
            return None
        if node_id == self.node.id:
            return None  # our own address in the bootstrap list
        node = Node(node_id, addr[0], addr[1])
        self.protocol.welcome_if_new(node)
        return node

    async def store(self, key: bytes, value: bytes, keep_local: bool = True) -> StoreResult:
        """Store a record on the k nodes closest to `key` (and here, when `keep_local`)."""
        if keep_local:
            self.storage.offer(key, value)
        target = Node(key)
        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            return StoreResult(0, 0)
        spider = SafeNodeCrawl(self.protocol, target, nearest, self.ksize, self.alpha)
        nodes = await spider.find()
        replies = await asyncio.gather(*(self.protocol.call_store(n, key, value) for n in nodes))
        stored = sum(1 for answered, result in replies if answered and result is True)
        return StoreResult(len(nodes), stored)

    async def closest_nodes(self, key: bytes) -> list[Node]:
        """The k nodes closest to `key` that answer (a node lookup)."""
        nearest = self.protocol.router.find_neighbors(Node(key))
        if not nearest:
            return []
        spider = SafeNodeCrawl(self.protocol, Node(key), nearest, self.ksize, self.alpha)
        found: list[Node] = await spider.find()
        return found

    async def set_digest(self, dkey: bytes, value: Any) -> bool:
        """kademlia's periodic republish of others' records goes through `store`."""
        if not isinstance(value, bytes):
            return False
        result = await self.store(dkey, value, keep_local=False)
        return result.ok

    def _contact(self, node_id: bytes) -> Node | None:
        """The routing table's contact with this id, if it holds one."""
        for bucket in self.protocol.router.buckets:
            node = bucket.nodes.get(node_id)
            if node is not None:
                return node
        return None

    async def fetch(self, key: bytes) -> Record | None:
        """The newest valid record under `key`: from local storage, else from the DHT."""
        local = self.storage.record(key)
        if local is not None:
            return local
        target = Node(key)
        nearest = self.protocol.router.find_neighbors(target)
        # kademlia's find_neighbors never returns the contact whose id *is* the
        # key, so a node record would never be asked of its own node: a node
        # whose record nobody else holds yet (the first node of a mesh, until it
        # republishes) could not be found even by a peer that knows it.
        owner = self._contact(key)
        if owner is not None:
            nearest = [owner, *nearest]
        if not nearest:
            return None
        spider = VerifiedValueCrawl(
            self.protocol,
            target,
            nearest,
            self.ksize,
            self.alpha,
            lambda value: self._accept(key, value),
        )
        found: Record | None = await spider.find()
        return found
