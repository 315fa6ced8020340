"""Lookups that survive malicious replies, over kademlia's spider crawls.

Why these subclasses exist: kademlia's crawls trust every reply. A node list
entry that is not (20-byte id, ip, port) makes `Node(*entry)` raise; a found
value that is unhashable makes `Counter(values)` raise `TypeError`; and
whatever value most peers return is handed back unverified. Here node lists
are parsed entry by entry (bad entries dropped), every fetched value is
decoded and validated (`accept`), bad ones are counted and ignored, and among
the valid ones the newest wins. The store-back to the nearest node without
the value (section 2.3 of the paper) is kept, but sends only a verified
record and does not delay the lookup.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from kademlia.crawling import NodeSpiderCrawl, ValueSpiderCrawl
from kademlia.node import Node

from gossipmesh.identity import NODE_ID_SIZE
from gossipmesh.records import NameRecord, Record

MAX_NODES_PER_REPLY = 64


def parse_node(entry: object) -> Node | None:
    """A kademlia Node from one (id, ip, port) entry of a reply, or None if malformed."""
    if not isinstance(entry, list | tuple) or len(entry) != 3:
        return None
    node_id, host, port = entry
    if not isinstance(node_id, bytes) or len(node_id) != NODE_ID_SIZE:
        return None
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        return None
    if not 1 <= port <= 65535 or not is_ip_literal(host):
        return None
    return Node(node_id, host, port)


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    """Cached: replies repeat the same few hosts, and ipaddress parsing is slow."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_node_list(payload: object, exclude_id: bytes) -> list[Node]:
    """The well-formed entries of a find_node reply, without ourselves."""
    if not isinstance(payload, list | tuple):
        return []
    nodes = []
    for entry in payload[:MAX_NODES_PER_REPLY]:
        node = parse_node(entry)
        if node is not None and node.id != exclude_id:
            nodes.append(node)
    return nodes


def newest(records: list[Record]) -> Record:
    """Among valid records for one key: the name-rule winner, then the highest sequence."""

    def rank(record: Record) -> tuple[int, bytes, int]:
        if isinstance(record, NameRecord):
            # min claimed_since, then min node id, then max sequence
            return (-record.claimed_since, bytes(255 - b for b in record.node_id), record.sequence)
        return (0, b"", record.sequence)

    return max(records, key=rank)


class SafeNodeCrawl(NodeSpiderCrawl):  # type: ignore[misc]
    """kademlia's node lookup with defensive parsing of replies."""

    async def _nodes_found(self, responses: dict[bytes, Any]) -> Any:
        toremove = []
        for peer_id, (answered, payload) in responses.items():
            if not answered:
                toremove.append(peer_id)
            else:
                self.nearest.push(parse_node_list(payload, self.protocol.source_node.id))
        self.nearest.remove(toremove)
        if self.nearest.have_contacted_all():
            return list(self.nearest)
        return await self.find()


class VerifiedValueCrawl(ValueSpiderCrawl):  # type: ignore[misc]
    """kademlia's value lookup that returns only a verified record (or None)."""

    def __init__(
        self,
        protocol: Any,
        node: Node,
        peers: list[Node],
        ksize: int,
        alpha: int,
        accept: Callable[[object], Record | None],
    ) -> None:
        super().__init__(protocol, node, peers, ksize, alpha)
        self._accept = accept

    async def _nodes_found(self, responses: dict[bytes, Any]) -> Any:
        toremove = []
        found: list[Record] = []
        for peer_id, (answered, payload) in responses.items():
            if not answered:
                toremove.append(peer_id)
            elif isinstance(payload, dict):
                record = self._accept(payload.get("value"))
                if record is not None:
                    found.append(record)
            else:
                peer = self.nearest.get_node(peer_id)
                if peer is not None:
                    self.nearest_without_value.push(peer)
                self.nearest.push(parse_node_list(payload, self.protocol.source_node.id))
        self.nearest.remove(toremove)
        if found:
            return self._handle_verified(found)
        if self.nearest.have_contacted_all():
            return None
        return await self.find()

    def _handle_verified(self, records: list[Record]) -> Record:
        best = newest(records)
        peer = self.nearest_without_value.popleft()
        if peer is not None:
            self.protocol.background(self.protocol.call_store(peer, self.node.id, best.encode()))
        return best
