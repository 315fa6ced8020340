"""`NodeRunner`: the daemon's node — a `NodeCore`, its DHT service and state files on asyncio.

The protocol lives in the core; this adapter owns what needs the OS or the
loop: the clock (`loop.time()`), the one re-armed timer and the requests
(`CoreDriver`), the `Discovery` service, address.json, and futures for
`ping`. The daemon's data plane calls `datagram_received`, `tun_packet`
and friends; the control socket calls `status`, `peers`, `ping`...
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gossipmesh.addressing import ipv6_for
from gossipmesh.directory import Directory, Resolved
from gossipmesh.discovery.crawling import is_ip_literal
from gossipmesh.discovery.service import Discovery
from gossipmesh.identity import Identity
from gossipmesh.links.planner import AcceptedToken
from gossipmesh.membership import NetworkSecret
from gossipmesh.node.core import NodeCore
from gossipmesh.node.events import EchoAnswered, NodeEvent, SaveDocument
from gossipmesh.node.links import LinkSender, NodeLinks
from gossipmesh.node.options import NodeCounters, NodeOptions
from gossipmesh.node.views import NodeViews, display_name, netcheck_report
from gossipmesh.routing.core import RoutingCore
from gossipmesh.runtime.core_driver import CoreDriver, NodeTransport
from gossipmesh.session.manager import SessionManager
from gossipmesh.statefiles import StateError, read_json, write_atomically, write_json
from gossipmesh.trust.document import DocumentError, DocumentKind, SignedDocument

log = logging.getLogger(__name__)

ADDRESS_FILE = "address.json"
DOCUMENT_FILES = {
    DocumentKind.POLICY: "policy.signed",
    DocumentKind.REVOCATIONS: "revocations.signed",
}
"""Where the newest verified authority documents are kept across restarts."""


class NodeRunner:
    """One mesh member on the running loop. Construct, `await start()`, feed it, `await stop()`."""

    def __init__(
        self,
        identity: Identity,
        secret: NetworkSecret,
        options: NodeOptions,
        transport: NodeTransport,
        *,
        state_dir: Path | None = None,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_clock_offset: float | None = None,
    ) -> None:
        self.identity = identity
        self.secret = secret
        self.options = options
        self.transport = transport
        self.state_dir = state_dir
        self._rng = rng or random.SystemRandom()
        self._random_bytes = random_bytes
        self._wall_clock_offset = wall_clock_offset
        self._echo_waiters: dict[int, asyncio.Future[float]] = {}
        self._stopping = False
        self.on_event: Callable[[NodeEvent], None] | None = None
        # Built in prepare(), once the loop is known.
        self.core: NodeCore
        self.driver: CoreDriver
        self.discovery: Discovery
        self.views: NodeViews
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- life cycle ------------------------------------------------------------

    def prepare(self) -> None:
        """Build the core and claim addresses (no traffic yet), inside the running loop.

        The runtime calls this first to learn the addresses for its TUN device;
        `start()` calls it if the runtime did not.
        """
        if self._loop is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        offset = self._wall_clock_offset
        wall_offset = time.time() - loop.time() if offset is None else offset
        self.core = NodeCore(
            self.identity,
            self.secret,
            self.options,
            now=loop.time(),
            wall_offset=wall_offset,
            rng=self._rng,
            random_bytes=self._random_bytes,
            saved_address=self._load_address_state(),
        )
        self.discovery = Discovery(
            self.identity,
            self.secret,
            self.transport.send_datagram,
            self.state_dir,
            record_lifetime=self.options.record_lifetime,
            rpc_timeout=self.options.rpc_timeout,
            wall_clock=lambda: loop.time() + wall_offset,
            admit=self.core.gate.admit_stored,
        )
        self.driver = CoreDriver(
            self.core,
            loop,
            self.transport,
            self.discovery,
            save_address=self._save_address_state,
            save_document=self._save_document,
            on_event=self._on_event,
        )
        self.views = NodeViews(self.core)
        self._load_documents()
        self.driver.drain()

    async def start(self) -> None:
        """Join the DHT, publish our records, and begin looking for peers."""
        self.prepare()
        await self.discovery.start(self.options.bootstrap)
        self.driver.report_contacts()
        self.core.start(self.now())
        self.driver.drain()

    async def stop(self) -> None:
        """Leave gracefully: tell neighbours, stop timers, save the peer cache."""
        if self._stopping:
            return
        self._stopping = True
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self.core.leave(self.now())
            self.driver.drain()
        await self.driver.close()
        await self.discovery.stop()
        for waiter in self._echo_waiters.values():
            waiter.cancel()

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # --- the data plane's calls (each drains the core's output) ------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.core.receive_datagram(data, addr, self._loop.time())  # type: ignore[union-attr]
        self.driver.drain()

    def datagrams_received(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        self.core.receive_datagrams(datagrams, addr, self._loop.time())  # type: ignore[union-attr]
        self.driver.drain()

    def tun_packet(self, packet: bytes) -> None:
        self.core.tun_packet(packet, self._loop.time())  # type: ignore[union-attr]
        self.driver.drain()

    def tun_packets(self, packets: list[bytes]) -> None:
        self.core.tun_packets(packets, self._loop.time())  # type: ignore[union-attr]
        self.driver.drain()

    def tun_frame(self, frame: bytes) -> bool:
        taken = self.core.tun_frame(frame, self._loop.time())  # type: ignore[union-attr]
        self.driver.drain()
        return taken

    # --- stream links: the runtime's reports (`runtime.links.LinkReports`) ----------

    def enable_links(
        self,
        port: int,
        connect: Callable[[Any], None],
        write_frame: Callable[[memoryview], None],
    ) -> None:
        """Accept and offer stream links: `connect` opens one, `write_frame` writes frames."""
        self.core.links.enable(port)
        self.driver.connect_link = connect
        self.driver.write_tun_frame = write_frame

    def claim(self, token: bytes) -> AcceptedToken | None:
        return self.core.links.claim(token, self.now())

    def up(self, peer_key: bytes, sender: LinkSender) -> None:
        self.core.links.up(peer_key, sender, self.now())

    def down(self, peer_key: bytes, sender: LinkSender, *, failed: bool) -> None:
        self.core.links.down(peer_key, sender, self.now(), failed=failed)

    def received(self, peer_key: bytes, plaintext: bytes) -> None:
        self.core.links.received(peer_key, plaintext, self.now())
        self.driver.drain()

    def connect_failed(self, peer_key: bytes) -> None:
        self.core.links.connect_failed(peer_key, self.now())

    # --- state files ------------------------------------------------------------

    def _load_address_state(self) -> object:
        if self.state_dir is None:
            return None
        try:
            return read_json(self.state_dir / ADDRESS_FILE)
        except StateError as exc:
            log.warning("%s; claiming the address afresh", exc)
            return None

    def _save_address_state(self, state: dict[str, Any]) -> None:
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_json(self.state_dir / ADDRESS_FILE, state)
        except (OSError, StateError) as exc:
            log.warning("address state not saved (it will be claimed afresh): %s", exc)

    # --- events ----------------------------------------------------------------------

    def _on_event(self, event: NodeEvent) -> None:
        if isinstance(event, EchoAnswered):
            waiter = self._echo_waiters.pop(event.nonce, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.at)
        if self.on_event is not None:
            self.on_event(event)

    # --- what the core holds, for the resolver, tests and collectors ---------------------

    @property
    def directory(self) -> Directory:
        return self.core.directory

    @property
    def routing(self) -> RoutingCore:
        return self.core.routing

    @property
    def sessions(self) -> SessionManager:
        return self.core.sessions

    @property
    def links(self) -> NodeLinks:
        return self.core.links

    @property
    def counters(self) -> NodeCounters:
        return self.core.counters

    @property
    def ipv4(self) -> ipaddress.IPv4Address | None:
        return self.core.ipv4 if self._loop is not None else None

    @property
    def ipv6(self) -> ipaddress.IPv6Address:
        return ipv6_for(self.identity.public_key)

    # --- commands for the control socket and the resolver -----------------------------

    async def lookup_name(self, label: str) -> Resolved | None:
        """A node by name: the directory first, else the DHT (its record is then kept)."""
        entry = self.core.directory.lookup_name(label)
        if entry is not None or self._loop is None:
            return entry
        record = await self.discovery.lookup_name(label)
        if record is None:
            return None
        await self.driver.lookup(record)
        # The directory's answer, not the name record's holder: a node record the
        # trust gate refused, or a claim that loses the names rule, names no one.
        return self.core.directory.lookup_name(label)

    async def ping(self, target: str, count: int = 3, timeout: float = 2.0) -> dict[str, Any]:
        """Mesh-level echo through the end-to-end session: RTTs and the path taken."""
        entry = self.views.resolve_target(target)
        if entry is None or entry.node_id == self.identity.node_id:
            raise LookupError(f"{target}: not a known mesh node")
        assert self._loop is not None
        probes = []
        for _ in range(max(1, min(count, 100))):
            nonce = self._rng.getrandbits(64)
            waiter: asyncio.Future[float] = self._loop.create_future()
            self._echo_waiters[nonce] = waiter
            sent_at = self.now()
            self.core.ping(entry.node_id, nonce, sent_at)
            self.driver.drain()
            try:
                answered = await asyncio.wait_for(waiter, timeout)
                rtt: float | None = (answered - sent_at) * 1000
            except TimeoutError:
                rtt = None
            finally:
                self._echo_waiters.pop(nonce, None)
                self.core.forget_ping(nonce)
            probes.append({"rtt_ms": rtt, "path": self.views.describe_path(entry.node_id)})
        return {"target": display_name(entry), "probes": probes}

    async def netcheck(self, max_peers: int = 8) -> dict[str, Any]:
        """This node's NAT behaviour as its peers see it (`gossipmesh netcheck`)."""
        peers = [(p.host, p.port) for p in self.discovery.known_peers()][:max_peers]
        if not peers:
            # No peer ever answered: ask the bootstrap nodes, so that a node whose
            # UDP is blocked reports "blocked", not "untested" (host names skipped:
            # resolving them is the runtime's job).
            peers = [addr for addr in self.options.bootstrap if is_ip_literal(addr[0])]
            peers = peers[:max_peers]
        observed = await asyncio.gather(*(self.discovery.observe(addr) for addr in peers))
        return netcheck_report(peers, list(observed), self.options.host_endpoints)

    def push_document(self, data: bytes) -> SignedDocument:
        """`gossipmesh policy push` / `revocations push`: in force here at once, then spread."""
        try:
            return self.core.offer_document(data, self.now())
        finally:
            self.driver.drain()

    def status(self) -> dict[str, Any]:
        return self.views.status(self.now(), self.discovery.stats.as_dict())

    def peers(self) -> list[dict[str, Any]]:
        return self.views.peers(self.now())

    def routes(self) -> list[dict[str, Any]]:
        return self.views.routes()

    def wg_config(self, leaf_name: str) -> dict[str, Any]:
        reflexive = self.discovery.reflexive_endpoint()
        endpoint = None if reflexive is None else (reflexive.host, reflexive.port)
        return self.views.wg_config(leaf_name, endpoint)

    def describe_path(self, node_id: bytes) -> str:
        return self.views.describe_path(node_id)

    # --- authority documents ----------------------------------------------------------

    def _load_documents(self) -> None:
        """Put the saved policy and revocation list back in force before any traffic."""
        if self.state_dir is None or self.options.authority_public_key is None:
            return
        for kind, name in DOCUMENT_FILES.items():
            path = self.state_dir / name
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("cannot read %s: %s", path, exc)
                continue
            try:
                self.core.offer_document(data, self.now())
            except DocumentError as exc:
                log.error("saved %s not used: %s", kind.name.lower(), exc)

    def _save_document(self, request: SaveDocument) -> None:
        if self.state_dir is None:
            return
        name = DOCUMENT_FILES.get(DocumentKind(request.kind))
        if name is None:
            return
        try:
            write_atomically(self.state_dir / name, request.data, mode=0o644)
        except StateError as exc:
            # In force in memory still; a restart would fall back to the older copy.
            log.error("cannot save %s: %s", name, exc)
