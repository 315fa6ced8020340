"""`CoreDriver`: a `NodeCore` on an asyncio loop, like aioquic's protocol beside its connection.

After every call into the core it pulls the output — datagrams to the
transport, packets and frames to the TUN — and, when the core says its
state moved (`outbox.dirty`), the events, the requests and the one timer,
re-armed with `call_at`. Requests that need the DHT run as tasks against
the `Discovery` service and feed their results back. The packet fast path
costs three list checks here; nothing else runs per packet.

The daemon (`NodeRunner`) and the simulator both drive their cores with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from gossipmesh.discovery.service import Discovery
from gossipmesh.node.core import NodeCore
from gossipmesh.node.events import (
    ConnectLink,
    DhtDatagram,
    FetchRecords,
    NodeEvent,
    NodeRequest,
    ProbeEndpoints,
    PublishRecords,
    SaveAddressState,
    SaveDocument,
)
from gossipmesh.records import NodeRecord

log = logging.getLogger(__name__)

Address = tuple[str, int]


class NodeTransport(Protocol):
    """What a node needs from the world: send a datagram, deliver a packet locally."""

    def send_datagram(self, data: bytes, addr: Address) -> None: ...

    def write_tun(self, packet: bytes) -> None: ...


class CoreDriver:
    """Moves one core's output to the world and carries out its requests."""

    def __init__(
        self,
        core: NodeCore,
        loop: asyncio.AbstractEventLoop,
        transport: NodeTransport,
        discovery: Discovery,
        *,
        save_address: Callable[[dict[str, Any]], None] | None = None,
        save_document: Callable[[SaveDocument], None] | None = None,
        on_event: Callable[[NodeEvent], None] | None = None,
    ) -> None:
        self.core = core
        self.loop = loop
        self.transport = transport
        self.discovery = discovery
        self.write_tun_frame: Callable[[memoryview], None] | None = None
        """Set with stream links on: writes a whole TUN frame (the offload TUN's)."""
        self.connect_link: Callable[[ConnectLink], None] | None = None
        self._save_address = save_address
        self._save_document = save_document
        self._on_event = on_event
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self.closed = False

    # --- output -----------------------------------------------------------------------

    def drain(self) -> None:
        """Pull everything the core produced; called after every call into it."""
        core = self.core
        outbox = core.outbox
        if outbox.datagrams:
            send = self.transport.send_datagram
            for datagram, addr in core.datagrams_to_send():
                send(datagram, addr)
        if outbox.tun_writes:
            write = self.transport.write_tun
            for packet in core.tun_packets_to_write():
                write(packet)
        if outbox.tun_frames:
            frames = core.tun_frames_to_write()
            if self.write_tun_frame is not None:
                for frame in frames:
                    self.write_tun_frame(frame)
        if outbox.dirty:
            outbox.dirty = False
            self._drain_slow()

    def _drain_slow(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            if self._on_event is not None:
                self._on_event(event)
        while (request := core.next_request()) is not None:
            self._carry_out(request)
        if core.outbox.datagrams or core.outbox.tun_writes:
            self.drain()  # a request answered at once (a DHT datagram) may have produced some
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self.closed:
            return
        when = self.core.get_timer()
        if when == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = None if when is None else self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        self.core.handle_timer(self.loop.time())
        self.drain()
        if self._timer is None:
            self._arm_timer()

    # --- requests ---------------------------------------------------------------------

    def _carry_out(self, request: NodeRequest) -> None:
        if isinstance(request, DhtDatagram):
            self.discovery.datagram_received(request.data, request.addr)
        elif isinstance(request, SaveAddressState):
            if self._save_address is not None:
                self._save_address(request.state)
        elif isinstance(request, SaveDocument):
            if self._save_document is not None:
                self._save_document(request)
        elif isinstance(request, ProbeEndpoints):
            self.spawn(self._probe(request))
        elif isinstance(request, FetchRecords):
            self.spawn(self._fetch(request))
        elif isinstance(request, PublishRecords):
            self.spawn(self._publish(request))
        elif isinstance(request, ConnectLink):
            if self.connect_link is not None:
                self.connect_link(request)
            else:
                self.core.links.connect_failed(request.order.peer_key, self.loop.time())

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run a one-off job; it is cancelled at close and its failure is logged."""
        if self.closed:
            job.close()
            return
        task = self.loop.create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node job failed", exc_info=task.exception())

    async def _probe(self, request: ProbeEndpoints) -> None:
        started = self.loop.time()
        endpoint = await self.first_answer(list(request.candidates))
        if not self.closed:
            now = self.loop.time()
            rtt = None if endpoint is None else now - started  # all echoes left at `started`
            self.core.probe_finished(request.node_id, endpoint, request.answering, now, rtt)
            self.drain()

    async def first_answer(self, candidates: list[Address]) -> Address | None:
        """Probe every candidate at once; the first to answer wins.

        One after another, each unreachable candidate (a private host address
        seen from outside its LAN) cost a whole echo timeout before the next
        was tried, while a punched NAT mapping waits for our packet.
        """

        async def answers(endpoint: Address) -> Address | None:
            return endpoint if await self.discovery.probe(endpoint) else None

        probes = [asyncio.ensure_future(answers(endpoint)) for endpoint in candidates]
        try:
            for finished in asyncio.as_completed(probes):
                endpoint = await finished
                if endpoint is not None:
                    return endpoint
            return None
        finally:
            for probe in probes:
                probe.cancel()

    async def _fetch(self, request: FetchRecords) -> None:
        found = await asyncio.gather(*(self.discovery.lookup_node(n) for n in request.node_ids))
        if self.closed:
            return
        self.report_contacts()
        records = [record for record in found if record is not None]
        self.core.records_fetched(records, self.loop.time(), round_finished=request.periodic)
        self.drain()

    async def _publish(self, request: PublishRecords) -> None:
        result = await self.discovery.publish(request.node_record, request.name_record)
        if not result.ok:
            log.info("DHT publication reached no peer yet; it is retried on every republish")
        if not self.closed:
            self.report_contacts()
            self.core.records_published(self.discovery.current_node_record(), self.loop.time())
            self.drain()

    def report_contacts(self) -> None:
        """Tell the core what the DHT knows: its contacts and our reflexive endpoint."""
        reflexive = self.discovery.reflexive_endpoint()
        self.core.dht_contacts(
            [peer.node_id for peer in self.discovery.known_peers()],
            None if reflexive is None else (reflexive.host, reflexive.port),
            self.loop.time(),
        )

    async def lookup(self, record: NodeRecord | None) -> None:
        """A record found outside the rounds (a name look-up): into the directory."""
        if record is not None and not self.closed:
            self.core.records_fetched([record], self.loop.time())
            self.drain()

    # --- life cycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the timer and cancel outstanding requests (the core stays as it is)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
