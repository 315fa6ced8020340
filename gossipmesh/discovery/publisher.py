"""Issuing this node's own records: templates in, freshly signed records out.

Every (re)publication signs the templates afresh with a new sequence number,
new issue and expiry times and the current reflexive endpoint, so a record
that stops being republished expires everywhere within one lifetime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from gossipmesh.discovery.server import RecordServer, StoreResult
from gossipmesh.discovery.stats import DiscoveryStats
from gossipmesh.identity import Identity
from gossipmesh.records import (
    MAX_ENDPOINTS,
    Endpoint,
    EndpointKind,
    NameRecord,
    NodeRecord,
    Record,
    RecordError,
    record_key,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    """What one publication achieved; failures are results, never exceptions."""

    node: StoreResult
    name: StoreResult | None

    @property
    def ok(self) -> bool:
        return self.node.ok and (self.name is None or self.name.ok)


class RecordPublisher:
    """Owns the templates, the sequence counter and the last records issued."""

    def __init__(
        self,
        identity: Identity,
        stats: DiscoveryStats,
        record_lifetime: int,
        now: Callable[[], float],
        reflexive: Callable[[], Endpoint | None],
    ) -> None:
        self._identity = identity
        self._stats = stats
        self._record_lifetime = record_lifetime
        self._now = now
        self._reflexive = reflexive
        self.last_sequence = 0
        """The highest sequence issued (or carried over from the peer cache)."""
        self._node_template: NodeRecord | None = None
        self._name_template: NameRecord | None = None
        self.node_record: NodeRecord | None = None
        self.name_record: NameRecord | None = None

    @property
    def has_templates(self) -> bool:
        """Whether there is anything to (re)publish yet."""
        return self._node_template is not None

    def set_templates(self, node_record: NodeRecord, name_record: NameRecord | None) -> None:
        """Both must carry this node's key; the name record must match the node's name claim."""
        if node_record.public_key != self._identity.public_key:
            raise ValueError("can only publish this node's own node record")
        if name_record is not None and (
            name_record.public_key != self._identity.public_key
            or name_record.name != node_record.name
        ):
            raise ValueError("the name record must be this node's and match its name claim")
        self._node_template = node_record
        self._name_template = name_record

    def carry_over_sequence(self, sequence: int) -> None:
        """A sequence from a previous run: later records must be newer than its."""
        self.last_sequence = max(self.last_sequence, sequence)

    async def publish(self, server: RecordServer) -> PublishResult:
        """Issue fresh records from the templates and store them in the DHT."""
        node_record, name_record = self._issue()
        self.node_record, self.name_record = node_record, name_record
        stores = [self._store(server, node_record)]
        if name_record is not None:
            stores.append(self._store(server, name_record))
        results = await asyncio.gather(*stores)
        return PublishResult(results[0], results[1] if name_record is not None else None)

    def _next_sequence(self) -> int:
        # Milliseconds since the epoch as a floor keeps sequences rising across a
        # restart that lost the cache; the cached last value covers clock steps back.
        self.last_sequence = max(self.last_sequence + 1, int(self._now() * 1000))
        return self.last_sequence

    def _issue(self) -> tuple[NodeRecord, NameRecord | None]:
        template = self._node_template
        assert template is not None
        issued_at = int(self._now())
        expires_at = issued_at + self._record_lifetime
        endpoints = [e for e in template.endpoints if e.kind != EndpointKind.REFLEXIVE]
        reflexive = self._reflexive()
        if reflexive is not None and reflexive not in endpoints:
            endpoints.append(reflexive)
        node_record = replace(
            template,
            sequence=self._next_sequence(),
            issued_at=issued_at,
            expires_at=expires_at,
            endpoints=tuple(endpoints[:MAX_ENDPOINTS]),
        ).signed(self._identity)
        name_record = None
        if self._name_template is not None:
            name_record = replace(
                self._name_template,
                sequence=self._next_sequence(),
                issued_at=issued_at,
                expires_at=expires_at,
            ).signed(self._identity)
        return node_record, name_record

    async def _store(self, server: RecordServer, record: Record) -> StoreResult:
        try:
            return await server.store(record_key(record), record.encode())
        except RecordError as refusal:
            # Our own record refused locally (for example a name someone holds
            # with an earlier claim): a result, reported and counted.
            self._stats.refuse(refusal.reason)
            log.warning("own record not published: %s", refusal)
            return StoreResult(0, 0)
