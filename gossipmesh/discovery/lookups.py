"""Finding other nodes' records: by node id, by name, and by key name.

A lookup reports "not found" (None) for every failure, never raises: callers
are the data path and DNS, which must not fail on a DHT hiccup. Every fetched
value is verified again here (`accept`), whatever the answering peer claimed.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable

from gossipmesh.discovery.server import RecordServer
from gossipmesh.discovery.stats import DiscoveryStats
from gossipmesh.errors import LabelError
from gossipmesh.identity import NODE_ID_SIZE
from gossipmesh.names import KEY_NAME_PREFIX, is_key_name, key_name
from gossipmesh.records import (
    NameRecord,
    NodeRecord,
    Record,
    RecordError,
    RefusalReason,
    decode_record,
    name_key,
    record_key,
    validate,
)

log = logging.getLogger(__name__)


class RecordLookups:
    """Look-ups through whichever server is running (`server()` is None when none is)."""

    def __init__(
        self,
        node_id: bytes,
        stats: DiscoveryStats,
        now: Callable[[], float],
        server: Callable[[], RecordServer | None],
    ) -> None:
        self._node_id = node_id
        self._stats = stats
        self._now = now
        self._server = server

    async def node(self, node_id: bytes) -> NodeRecord | None:
        """The verified, unexpired record of `node_id`, or None."""
        if self._server() is None or len(node_id) != NODE_ID_SIZE:
            return None
        record = await self._fetch(node_id)
        return record if isinstance(record, NodeRecord) else None

    async def name(self, name: str) -> NodeRecord | None:
        """The holder's node record, only while it still claims `name` (name records go stale)."""
        try:
            key = name_key(name)
        except LabelError:
            return None
        if self._server() is None:
            return None
        if is_key_name(name):
            return await self._key_name(name.lower())
        name_record = await self._fetch(key)
        if not isinstance(name_record, NameRecord):
            return None
        node_record = await self.node(name_record.node_id)
        if node_record is None or node_record.name != name_record.name:
            return None
        return node_record

    async def _key_name(self, name: str) -> NodeRecord | None:
        """A key name (`gm-` + base32 of the node id's first 80 bits) needs no name
        record: the node whose id starts with those bits is the closest of all to
        them by XOR distance, so a node lookup of the prefix finds its full id."""
        try:
            prefix = base64.b32decode(name[len(KEY_NAME_PREFIX) :].upper())
        except (binascii.Error, ValueError):
            return None
        if self._node_id.startswith(prefix):
            return await self.node(self._node_id)
        self._stats.lookups += 1
        server = self._server()
        try:
            target = prefix + bytes(NODE_ID_SIZE - len(prefix))
            candidates = [] if server is None else await server.closest_nodes(target)
        except Exception:
            log.exception("DHT node lookup failed")
            candidates = []
        for node_id in {n.id for n in candidates if n.id.startswith(prefix)}:
            record = await self.node(node_id)
            if record is not None and key_name(record.node_id) == name:
                return record
        self._stats.lookups_failed += 1
        return None

    async def _fetch(self, key: bytes) -> Record | None:
        self._stats.lookups += 1
        server = self._server()  # None when stopped during a multi-step lookup
        try:
            record = None if server is None else await server.fetch(key)
        except Exception:
            # A guard, not a path we expect: a lookup reports "not found", never raises.
            log.exception("DHT lookup failed")
            record = None
        if record is None:
            self._stats.lookups_failed += 1
        return record

    def accept(self, key: bytes, value: object) -> Record | None:
        """The lookup path's second verification of a fetched value; refusals are counted."""
        try:
            if not isinstance(value, bytes):
                raise RecordError(RefusalReason.MALFORMED, "a stored value is bytes")
            record = decode_record(value)
            if record_key(record) != key:
                raise RecordError(RefusalReason.WRONG_KEY)
            return validate(record, self._now())
        except RecordError as refusal:
            self._stats.refuse(refusal.reason)
            return None
