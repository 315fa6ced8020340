"""An oracle DHT for the mesh workload: one shared table of signed records (`dht = "oracle"`).

Studies of gossip and routing at thousands of nodes need the node cores,
not kademlia: with `workload.dht = "oracle"` each node's DHT requests are
answered from one table shared by the run, after `oracle_latency` virtual
seconds, instead of by a `Discovery` service per node. What stays real:
records are signed by their node and every record a node takes from the
table is verified by it (`records.validate`); path probes are datagrams on
the simulated network (an echo to each candidate endpoint, the first answer
wins), so loss, partitions and crashes still decide which paths exist.
What is simplified: publishing and look-ups cost no datagrams and always
reach the table; a node's DHT contacts are the `ORACLE_CONTACTS` running
nodes closest to it by XOR distance (what a converged kademlia table holds);
probe echoes carry no seal (every simulated node holds the network secret).

No asyncio task or future per node or per request: pending work is a
`call_at` handle, as for the core's own timer (the issue's requirement).
Which DHT a run used is in `summary.json` (`mesh.dht`).
"""

from __future__ import annotations

import asyncio
import heapq
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from gossipmesh.discovery.service import Discovery
from gossipmesh.identity import Identity
from gossipmesh.node.core import NodeCore
from gossipmesh.node.events import (
    DhtDatagram,
    FetchRecords,
    NodeRequest,
    ProbeEndpoints,
    PublishRecords,
)
from gossipmesh.records import NodeRecord, RecordError, validate
from gossipmesh.runtime.core_driver import Address, CoreDriver, NodeTransport

__all__ = ["ORACLE_CONTACTS", "OracleDht", "OracleDriver"]

ORACLE_CONTACTS = 20
"""DHT contacts reported to each node: kademlia's k."""
_ECHO = struct.Struct("!B7sQ")
_ECHO_ASK = b"gm-echo"
_ECHO_ANSWER = b"gm-ecba"
DHT_KIND = 5
"""First byte of a DHT datagram: the node core hands these to its driver."""


class OracleDht:
    """The run's one table of published node records."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.records: dict[bytes, NodeRecord] = {}
        self.publications = 0
        self.lookups = 0
        self.running: set[bytes] = set()
        """Node ids of the running nodes (the workload keeps it)."""
        self._version = 0
        self._contacts: dict[bytes, tuple[int, list[bytes]]] = {}
        """Per node: the contacts computed at a membership version (recomputed after a change)."""

    def membership_changed(self) -> None:
        self._version += 1

    def publish(self, record: NodeRecord) -> None:
        held = self.records.get(record.node_id)
        if held is None:
            self.membership_changed()
        if held is None or held.sequence < record.sequence:
            self.records[record.node_id] = record
        self.publications += 1

    def lookup(self, node_id: bytes) -> NodeRecord | None:
        self.lookups += 1
        return self.records.get(node_id)

    def contacts(self, node_id: bytes) -> list[bytes]:
        """The running nodes with a published record closest to `node_id` (XOR), sorted."""
        cached = self._contacts.get(node_id)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        own = int.from_bytes(node_id, "big")
        running = self.running
        ids = heapq.nsmallest(
            ORACLE_CONTACTS,
            (n for n in self.records if n != node_id and n in running),
            key=lambda n: int.from_bytes(n, "big") ^ own,
        )
        self._contacts[node_id] = (self._version, ids)
        return ids


@dataclass
class _Probe:
    request: ProbeEndpoints
    started: float
    nonces: dict[int, Address] = field(default_factory=dict)
    timeout: asyncio.TimerHandle | None = None


class OracleDriver(CoreDriver):
    """`CoreDriver` with the DHT requests answered by an `OracleDht`, on timers only."""

    def __init__(
        self,
        core: NodeCore,
        loop: asyncio.AbstractEventLoop,
        transport: NodeTransport,
        oracle: OracleDht,
        identity: Identity,
        address: Address,
        *,
        record_lifetime: int,
        rpc_timeout: float,
        next_nonce: Callable[[], int],
    ) -> None:
        # No Discovery: every request that would use one is carried out below.
        super().__init__(core, loop, transport, cast(Discovery, None))
        self.oracle = oracle
        self.identity = identity
        self.address = address
        self.record_lifetime = record_lifetime
        self.rpc_timeout = rpc_timeout
        self._next_nonce = next_nonce
        self._handles: set[asyncio.TimerHandle] = set()
        self._probes: dict[int, _Probe] = {}
        self._last_sequence = 0
        self._template: NodeRecord | None = None
        self.current: NodeRecord | None = None

    def _wall(self) -> float:
        return self.core.wall(self.loop.time())

    def later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` after `delay` unless the driver closes first."""
        if self.closed:
            return
        handle: asyncio.TimerHandle

        def run() -> None:
            self._handles.discard(handle)
            if not self.closed:
                callback(*args)

        handle = self.loop.call_later(delay, run)
        self._handles.add(handle)

    def join(self) -> None:
        """The DHT is 'up' after one latency: report contacts, start the core."""

        def joined() -> None:
            self.report_contacts()
            self.core.start(self.loop.time())
            self.drain()

        self.later(self.oracle.latency, joined)

    def _carry_out(self, request: NodeRequest) -> None:
        if isinstance(request, DhtDatagram):
            self._echo_received(request.data, request.addr)
        elif isinstance(request, ProbeEndpoints):
            self._start_probe(request)
        elif isinstance(request, FetchRecords):
            self.later(self.oracle.latency, self._fetched, request)
        elif isinstance(request, PublishRecords):
            self._template = request.node_record
            self.later(self.oracle.latency, self._published)
        else:
            super()._carry_out(request)

    # --- records ------------------------------------------------------------------------

    def _sign(self, template: NodeRecord) -> NodeRecord:
        """As the DHT service's publisher: a new sequence and lifetime, signed afresh."""
        wall = self._wall()
        self._last_sequence = max(self._last_sequence + 1, int(wall * 1000))
        issued = int(wall)
        return replace(
            template,
            sequence=self._last_sequence,
            issued_at=issued,
            expires_at=issued + self.record_lifetime,
        ).signed(self.identity)

    def _published(self) -> None:
        if self._template is None:
            return
        record = self.current = self._sign(self._template)
        self.oracle.publish(record)
        self.report_contacts()
        self.core.records_published(record, self.loop.time())
        self.drain()
        # Republished before it expires, as the DHT service does (not gossiped).
        self.later(self.record_lifetime / 3, self._republish, record)

    def _republish(self, published: NodeRecord) -> None:
        if self._template is None or self.current is not published:
            return
        self.current = self._sign(self._template)
        self.oracle.publish(self.current)
        self.later(self.record_lifetime / 3, self._republish, self.current)

    def _fetched(self, request: FetchRecords) -> None:
        wall = self._wall()
        records = []
        for node_id in request.node_ids:
            found = self.oracle.lookup(node_id)
            if found is None:
                continue
            try:
                checked = validate(found, wall)
            except RecordError:
                continue
            if isinstance(checked, NodeRecord):
                records.append(checked)
        self.report_contacts()
        self.core.records_fetched(records, self.loop.time(), round_finished=request.periodic)
        self.drain()

    def report_contacts(self) -> None:
        self.core.dht_contacts(
            self.oracle.contacts(self.identity.node_id), self.address, self.loop.time()
        )

    # --- path probes: echoes on the simulated network ----------------------------------

    def _start_probe(self, request: ProbeEndpoints) -> None:
        probe = _Probe(request, self.loop.time())
        for endpoint in request.candidates:
            nonce = self._next_nonce()
            probe.nonces[nonce] = endpoint
            self._probes[nonce] = probe
            self.transport.send_datagram(_ECHO.pack(DHT_KIND, _ECHO_ASK, nonce), endpoint)
        if not probe.nonces:
            self._finish(probe, None)
            return
        probe.timeout = self.loop.call_later(self.rpc_timeout, self._finish, probe, None)

    def _echo_received(self, data: bytes, addr: Address) -> None:
        if len(data) != _ECHO.size:
            return
        _, kind, nonce = _ECHO.unpack(data)
        if kind == _ECHO_ASK:
            self.transport.send_datagram(_ECHO.pack(DHT_KIND, _ECHO_ANSWER, nonce), addr)
        elif kind == _ECHO_ANSWER:
            probe = self._probes.get(nonce)
            if probe is not None and probe.nonces.get(nonce) == addr:
                self._finish(probe, addr)

    def _finish(self, probe: _Probe, endpoint: Address | None) -> None:
        for nonce in probe.nonces:
            self._probes.pop(nonce, None)
        if probe.timeout is not None:
            probe.timeout.cancel()
        if self.closed:
            return
        now = self.loop.time()
        rtt = None if endpoint is None else now - probe.started
        request = probe.request
        self.core.probe_finished(request.node_id, endpoint, request.answering, now, rtt)
        self.drain()

    def halt(self) -> None:
        """A crash: the timer, pending replies and probes end at once (no task needed)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        for probe in list(self._probes.values()):
            if probe.timeout is not None:
                probe.timeout.cancel()
        self._probes.clear()
