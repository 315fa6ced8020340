"""kademlia's RPC protocol, hardened for a DHT of signed records.

What `kademlia.protocol.KademliaProtocol` / `rpcudp.RPCProtocol` do not do,
and so this subclass does:

- Parse defensively. rpcudp hands every datagram to umsgpack and to the
  handler named in it; garbage raises inside a task, and a request with
  wrong argument types raises in the handler (`nodeid.hex()` on an int).
  Datagrams reaching us are already authenticated (only members can seal),
  but a member may still be buggy or hostile: each request is checked
  against a table of argument types and counted as malformed otherwise.
  Handling is synchronous, so no task is created per datagram.
- Verify before storing. `rpc_store` stored any value under any key; here
  the storage decodes and validates the record and checks that the key is
  the record's own, and refusals are counted by reason.
- Answer "how do you see me": `rpc_stun` echoes the observed source address
  (kademlia has the RPC; it is kept, with a well-formed reply), which gives
  the node its reflexive endpoint.
- Replicate to the right nodes, once. kademlia's `welcome_if_new` hashes the
  stored key a second time (`digest(key)`) before measuring distance, so it
  hands records to nodes close to the wrong point; here the key itself is
  used. It treats a node in a full bucket's replacement list as new on every
  RPC (a storage scan and record pushes each time); here a node is welcomed
  once per WELCOME_MEMORY. It never adds ourselves to our own routing table.
- Tolerate late replies. rpcudp sets results on futures without checking
  whether a caller already gave up (cancelled), which raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import umsgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from gossipmesh.discovery.stats import DiscoveryStats
from gossipmesh.discovery.storage import RecordStorage
from gossipmesh.identity import NODE_ID_SIZE
from gossipmesh.records import MAX_RECORD_SIZE, RecordError, RefusalReason

log = logging.getLogger(__name__)

WELCOME_MEMORY = 600.0
"""Seconds during which a node already handed our records is not handed them again."""
MAX_WELCOMED = 4096

REQUEST = 0x00
RESPONSE = 0x01
MSG_ID_SIZE = 20


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == NODE_ID_SIZE


def _is_value(value: object) -> bool:
    # Oversized values are let through to storage so they are refused and counted.
    return isinstance(value, bytes)


_RPC_ARGUMENTS: dict[str, tuple[Callable[[object], bool], ...]] = {
    "ping": (_is_id,),
    "store": (_is_id, _is_id, _is_value),
    "find_node": (_is_id, _is_id),
    "find_value": (_is_id, _is_id),
    "stun": (),
}
"""Every RPC we answer, with a check per argument (sender id, key, value)."""


class RecordProtocol(KademliaProtocol):  # type: ignore[misc]
    """The kademlia protocol with verified storage and defensive RPC parsing."""

    def __init__(
        self,
        source_node: Node,
        storage: RecordStorage,
        ksize: int,
        stats: DiscoveryStats,
        wait_timeout: float,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self._wait_timeout = wait_timeout
        self.stats = stats
        self._tasks: set[asyncio.Future[Any]] = set()
        self._welcomed: OrderedDict[bytes, float] = OrderedDict()

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a fire-and-forget RPC, keeping a reference so it is not collected mid-flight."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_all(self) -> None:
        """On stop: end every waiting RPC as 'no answer' and every background task."""
        for msg_id in list(self._outstanding):
            self._timeout(msg_id)
        for task in list(self._tasks):
            task.cancel()

    # --- receiving ---------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Handle one opened rpcudp datagram (replaces rpcudp's task per datagram)."""
        address = (addr[0], addr[1])
        if len(data) < 1 + MSG_ID_SIZE + 1 or data[0] not in (REQUEST, RESPONSE):
            self.stats.rpc_malformed += 1
            return
        msg_id = data[1 : 1 + MSG_ID_SIZE]
        try:
            body = umsgpack.unpackb(data[1 + MSG_ID_SIZE :])
        except Exception:  # umsgpack raises many types on garbage
            self.stats.rpc_malformed += 1
            return
        if data[0] == RESPONSE:
            self._accept_response(msg_id, body, address)
        else:
            self._answer_request(msg_id, body, address)

    def _answer_request(self, msg_id: bytes, body: object, address: tuple[str, int]) -> None:
        if not isinstance(body, list) or len(body) != 2:
            self.stats.rpc_malformed += 1
            return
        name, args = body
        checks = _RPC_ARGUMENTS.get(name) if isinstance(name, str) else None
        if (
            checks is None
            or not isinstance(args, list)
            or len(args) != len(checks)
            or not all(check(arg) for check, arg in zip(checks, args, strict=True))
        ):
            self.stats.rpc_malformed += 1
            return
        try:
            response = getattr(self, f"rpc_{name}")(address, *args)
            reply = bytes([RESPONSE]) + msg_id + umsgpack.packb(response)
        except Exception:
            self.stats.rpc_errors += 1
            log.exception("DHT handler rpc_%s failed", name)
            return
        self.transport.sendto(reply, address)

    def _accept_response(self, msg_id: bytes, data: object, address: tuple[str, int]) -> None:
        pending = self._outstanding.pop(msg_id, None)
        if pending is None:
            return  # late, duplicated or replayed: nobody waits for it
        future, timeout = pending
        timeout.cancel()
        if not future.done():
            future.set_result((True, data))

    def _timeout(self, msg_id: bytes) -> None:
        pending = self._outstanding.pop(msg_id, None)
        if pending is None:
            return
        future, timeout = pending
        timeout.cancel()
        if not future.done():
            future.set_result((False, None))

    # --- handlers ------------------------------------------------------------------

    def rpc_store(self, sender: tuple[str, int], nodeid: bytes, key: bytes, value: bytes) -> bool:
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        try:
            if len(value) > MAX_RECORD_SIZE:
                # Checked first so an oversized value costs no parsing.
                raise RecordError(RefusalReason.OVERSIZED, f"{len(value)} bytes")
            if self.storage.offer(key, value):
                self.stats.records_stored += 1
        except RecordError as refusal:
            self.stats.refuse(refusal.reason)
            log.debug("refused a store from %s: %s", sender, refusal)
            return False
        return True

    def rpc_stun(self, sender: tuple[str, int]) -> list[object]:
        return [sender[0], sender[1]]

    def welcome_if_new(self, node: Node) -> None:
        """kademlia's welcome (section 2.5: hand a newcomer the records it should hold), fixed."""
        if node.id == self.source_node.id:
            return
        if not self.router.is_new_node(node) or not self._first_welcome(node.id):
            self.router.add_contact(node)  # refreshes its place, as kademlia would
            return
        for key, value in self.storage:
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                last = neighbors[-1].distance_to(keynode)
                new_node_close = node.distance_to(keynode) < last
                first = neighbors[0].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < first
            if not neighbors or (new_node_close and this_closest):
                self.background(self.call_store(node, key, value))
        self.router.add_contact(node)

    def _first_welcome(self, node_id: bytes) -> bool:
        """Whether `node_id` was not welcomed within WELCOME_MEMORY seconds.

        kademlia calls a node "new" when it is not in its bucket's main list, so a
        node waiting in a full bucket's replacement list is "new" on every RPC:
        each one rescanned all of storage and re-sent records to it.
        """
        now = asyncio.get_running_loop().time()
        welcomed = self._welcomed.get(node_id)
        if welcomed is not None and now - welcomed < WELCOME_MEMORY:
            return False
        self._welcomed[node_id] = now
        self._welcomed.move_to_end(node_id)
        while len(self._welcomed) > MAX_WELCOMED:
            self._welcomed.popitem(last=False)
        return True
