"""The answering core wired to its slow paths: the directory's DHT lookup and the forwarder.

This is the one object the daemon builds and hands to the servers. It owns
the deadlines (a slow path never holds a query longer than its timeout) and
bounds how many slow-path queries may be pending at once, so that a flood of
unknown names cannot grow tasks without limit.
"""

from __future__ import annotations

import asyncio
import logging

from gossipmesh.dns.answer import (
    Drop,
    MeshAnswerer,
    NeedsForward,
    NeedsLookup,
    Outcome,
    Reply,
    Transport,
)
from gossipmesh.dns.config import ResolverConfig
from gossipmesh.dns.directory import MeshDirectory
from gossipmesh.dns.forward import Forwarder

log = logging.getLogger(__name__)

DEFAULT_LOOKUP_TIMEOUT = 2.0
"""Seconds a DHT name lookup may take before the query gets SERVFAIL."""
DEFAULT_MAX_PENDING = 512


class MeshResolver:
    """Answers a query message completely: from the view, the DHT, or upstream."""

    def __init__(
        self,
        view: MeshDirectory,
        config: ResolverConfig | None = None,
        forwarder: Forwarder | None = None,
        *,
        lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.view = view
        self.answerer = MeshAnswerer(config)
        self.forwarder = forwarder
        self.lookup_timeout = lookup_timeout
        self.max_pending = max_pending
        self._pending = 0

    @property
    def config(self) -> ResolverConfig:
        return self.answerer.config

    def answer_now(self, wire: bytes, transport: Transport) -> Outcome:
        """The synchronous part: a final reply for everything the local view settles."""
        return self.answerer.answer(wire, self.view, transport)

    def servfail(self, wire: bytes) -> bytes | None:
        return self.answerer.servfail(wire)

    async def finish(self, outcome: NeedsLookup | NeedsForward) -> bytes:
        """Run the slow path an outcome asks for, within its deadline."""
        if self._pending >= self.max_pending:
            return self._failed(outcome)
        self._pending += 1
        try:
            if isinstance(outcome, NeedsLookup):
                return await self._finish_lookup(outcome)
            return await self._finish_forward(outcome)
        finally:
            self._pending -= 1

    async def resolve(self, wire: bytes, transport: Transport) -> bytes | None:
        """The whole answer for one message, or None when it deserves silence."""
        outcome = self.answer_now(wire, transport)
        if isinstance(outcome, Reply):
            return outcome.wire
        if isinstance(outcome, Drop):
            return None
        return await self.finish(outcome)

    async def _finish_lookup(self, pending: NeedsLookup) -> bytes:
        try:
            host = await asyncio.wait_for(self.view.lookup_name(pending.label), self.lookup_timeout)
        except TimeoutError:
            log.info("name lookup for %r timed out", pending.label)
            return self._failed(pending)
        except Exception:
            log.exception("name lookup for %r failed", pending.label)
            return self._failed(pending)
        return self.answerer.answer_lookup(pending, host).wire

    async def _finish_forward(self, pending: NeedsForward) -> bytes:
        if self.forwarder is None:
            return self.answerer.answer_forward(pending, None).wire
        try:
            upstream = await self.forwarder.forward(pending.name, pending.qtype)
        except Exception:
            log.exception("forwarding %s %s failed", pending.name, pending.qtype)
            upstream = None
        return self.answerer.answer_forward(pending, upstream).wire

    def _failed(self, outcome: NeedsLookup | NeedsForward) -> bytes:
        return self.answerer.servfail_for(outcome.query).wire
