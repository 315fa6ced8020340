"""`Discovery`: the DHT as the daemon and the simulator use it.

It owns a kademlia node (`RecordServer`) whose datagrams are sealed and sent
through an injected `send(datagram, addr)` callable, and is fed received
type-5 datagrams through `datagram_received`. It uses nothing but the running
asyncio loop (its clock, `call_later`/`sleep`, and `getaddrinfo` only for
bootstrap host names), so the same code runs on the simulator's virtual-time
loop and simulated network.

`Discovery` runs the life cycle and the maintenance cadence; its parts do the
rest: `RecordPublisher` issues and stores our records (republished on change
and every `republish_interval`, shorter than `record_lifetime`, so a stopped
node's records expire everywhere within one lifetime), `RecordLookups` finds
and verifies others', `ReflexiveEndpoint` learns how peers see us and
`PeerCacheKeeper` carries peers and the sequence number across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from gossipmesh.discovery.clock import use_loop_clock
from gossipmesh.discovery.lookups import RecordLookups
from gossipmesh.discovery.peer_cache import Peer, PeerCacheKeeper
from gossipmesh.discovery.publisher import PublishResult, RecordPublisher
from gossipmesh.discovery.reflexive import REFLEXIVE_QUORUM, ReflexiveEndpoint, parse_observed
from gossipmesh.discovery.seal import DatagramSeal, ReplayFilter
from gossipmesh.discovery.server import RecordServer
from gossipmesh.discovery.stats import DiscoveryStats
from gossipmesh.discovery.storage import RecordStorage
from gossipmesh.discovery.transport import Address, SealedTransport, SendDatagram
from gossipmesh.identity import Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.records import Endpoint, NameRecord, NodeRecord, Record

__all__ = ["REFLEXIVE_QUORUM", "Discovery", "PublishResult"]

log = logging.getLogger(__name__)

DEFAULT_RECORD_LIFETIME = 1800
REJOIN_FIRST = 2.0
REJOIN_MAX = 60.0
"""Seconds between joins while no peer has answered: doubling from REJOIN_FIRST."""
"""Seconds a published record lives: how long a dead node's record can linger."""
DEFAULT_RPC_TIMEOUT = 5.0
"""rpcudp's own default wait for a reply."""
DEFAULT_REFRESH_INTERVAL = 3600.0
"""kademlia's bucket refresh period (section 2.3 of the paper)."""


class Discovery:
    """A member of the network's private, signed Kademlia DHT (one per run: start, then stop)."""

    def __init__(
        self,
        identity: Identity,
        network_secret: NetworkSecret,
        send: SendDatagram,
        state_dir: Path | None = None,
        *,
        ksize: int = 20,
        alpha: int = 3,
        record_lifetime: int = DEFAULT_RECORD_LIFETIME,
        republish_interval: float | None = None,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        wall_clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        admit: Callable[[Record, float], bool] | None = None,
    ) -> None:
        """`wall_clock` gives Unix seconds for record times; by default the loop clock
        plus the offset to `time.time()` measured at `start()`, so a virtual-time
        loop moves record time too. `rng` jitters the republish cadence (the
        simulator passes a seeded one)."""
        self._admit = admit
        republish = record_lifetime / 3 if republish_interval is None else republish_interval
        if not 0 < republish < record_lifetime:
            raise ValueError("republish_interval must be positive and shorter than the lifetime")
        self.identity = identity
        self.stats = DiscoveryStats()
        self.state_dir = state_dir
        self._seal = DatagramSeal(network_secret.dht_key)
        self._replays = ReplayFilter()
        self._send = send
        self._ksize = ksize
        self._alpha = alpha
        self._republish_interval = republish
        self._rng = rng or random.Random()
        self._rpc_timeout = rpc_timeout
        self._refresh_interval = refresh_interval
        self._wall_clock = wall_clock
        self._wall_offset: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: RecordServer | None = None
        self._transport: SealedTransport | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._bootstrap: list[tuple[str, int]] = []
        self._next_refresh = 0.0
        self._reflexive = ReflexiveEndpoint()
        self._publisher = RecordPublisher(
            identity, self.stats, record_lifetime, self.now, self.reflexive_endpoint
        )
        self._lookups = RecordLookups(identity.node_id, self.stats, self.now, self._running_server)
        self._cache = PeerCacheKeeper(state_dir, identity.node_id, self.stats)

    @property
    def cache_problem(self) -> str | None:
        """Why the peer cache could not be used, if it could not (reported, not fatal)."""
        return self._cache.problem

    # --- clocks -------------------------------------------------------------------

    def now(self) -> float:
        """Unix seconds, as used for record times."""
        if self._wall_clock is not None:
            return self._wall_clock()
        if self._loop is None or self._wall_offset is None:
            return time.time()
        return self._loop.time() + self._wall_offset

    # --- datagrams ----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """A type-5 datagram from the node's UDP port (or the simulated network)."""
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        if self._server is None or self._loop is None or self._stopped:
            self.stats.datagrams_dropped += 1
            return
        plaintext = self._seal.open(data)
        if plaintext is None:
            self.stats.datagrams_dropped += 1
            return
        if self._replays.is_replay(data, self._loop.time()):
            self.stats.datagrams_replayed += 1
            return
        self._server.protocol.datagram_received(plaintext, addr)

    # --- life cycle -------------------------------------------------------------------

    async def start(self, bootstrap: Iterable[tuple[str, int]] = ()) -> int:
        """Join: bootstrap from `bootstrap` (host names allowed) and the cached peers.

        Returns how many peers are known afterwards (0 for the first node of a
        network, or when no one answered: joining is retried on every republish).
        """
        if self._server is not None:
            raise RuntimeError("Discovery.start() was already called")
        self._loop = asyncio.get_running_loop()
        use_loop_clock()
        self._wall_offset = time.time() - self._loop.time()
        storage = RecordStorage(self.now, self._loop.time, admit=self._admit)
        self._server = RecordServer(
            self.identity.node_id,
            storage,
            self.stats,
            self._lookups.accept,
            self._ksize,
            self._alpha,
            self._rpc_timeout,
        )
        self._transport = SealedTransport(self._seal, self._send, self.stats)
        self._server.protocol.connection_made(self._transport)
        self._bootstrap = list(bootstrap)
        self._cache.load()
        self._publisher.carry_over_sequence(self._cache.last_sequence)
        self._next_refresh = self._loop.time() + self._refresh_interval
        await self._join()
        self._maintenance = self._loop.create_task(self._maintain())
        if not self.known_peers() and (self._bootstrap or self._cache.peers):
            self._spawn(self._rejoin_while_alone())
        return len(self.known_peers())

    async def stop(self) -> None:
        """Leave: stop republishing, save the peer cache, end pending RPCs."""
        if self._stopped:
            return
        self._stopped = True
        tasks = list(self._tasks)
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._save_cache()
            self._server.protocol.cancel_all()
        if self._transport is not None:
            self._transport.close()

    async def _join(self) -> None:
        server = self._require_server()
        addresses = await self._resolve(self._bootstrap)
        addresses += [(p.host, p.port) for p in self._cache.peers]
        unique = list(dict.fromkeys(addresses))
        if unique:
            await server.bootstrap(unique)
        await self._learn_reflexive()

    async def _rejoin_while_alone(self) -> None:
        """The bootstrap did not answer: try again soon, backing off, until someone does.

        Waiting for the next republish (a third of the record lifetime) left a
        node whose bootstrap was busy or not yet up knowing nobody for minutes.
        """
        delay = REJOIN_FIRST
        while not self.known_peers() and not self._stopped:
            await asyncio.sleep(delay * self._rng.uniform(0.8, 1.2))
            delay = min(REJOIN_MAX, delay * 2)
            try:
                await self._join()
            except Exception:
                log.exception("DHT join failed; retrying")
        if self.known_peers() and self._publisher.has_templates:
            await self._publish_logged()

    async def _resolve(self, addresses: Iterable[tuple[str, int]]) -> list[Address]:
        """IP literals as they are; host names through the loop's getaddrinfo."""
        resolved: list[Address] = []
        for host, port in addresses:
            try:
                resolved.append((str(ipaddress.ip_address(host)), port))
                continue
            except ValueError:
                pass
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM
                )
            except OSError as exc:
                log.warning("bootstrap host %s cannot be resolved: %s", host, exc)
                continue
            resolved += [(str(info[4][0]), int(info[4][1])) for info in infos]
        return resolved

    async def _maintain(self) -> None:
        """Every republish interval: republish, then (one round at a time) rejoin if
        alone, relearn the reflexive endpoint, refresh lonely buckets when due and
        save the peer cache.

        Publications are started on a fixed cadence and not awaited here: one
        slowed by peers that time out (a publication waits for its crawl and its
        stores) must not push the next one past the record lifetime.
        """
        loop = self._loop
        assert loop is not None
        due = loop.time()
        housekeeping: asyncio.Task[None] | None = None
        while True:
            due = max(due + self._republish_interval, loop.time())
            # Up to +-10 % around the cadence, never drifting: nodes restarted in the
            # same second do not republish in the same second forever after.
            jitter = self._rng.uniform(-0.1, 0.1) * self._republish_interval
            await asyncio.sleep(max(0.0, due + jitter - loop.time()))
            if self._publisher.has_templates:
                self._spawn(self._publish_logged())
            if housekeeping is None or housekeeping.done():
                housekeeping = self._spawn(self._housekeep())

    async def _housekeep(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            if not self.known_peers():
                await self._join()
            else:
                await self._learn_reflexive()
            if loop.time() >= self._next_refresh:
                self._next_refresh = loop.time() + self._refresh_interval
                await self._require_server()._refresh_table()
            self._save_cache()
        except Exception:
            log.exception("DHT maintenance failed; retrying next interval")

    async def _publish_logged(self) -> None:
        try:
            await self._publish_now()
        except Exception:
            log.exception("DHT republication failed; retrying next interval")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- publishing ------------------------------------------------------------------

    async def publish(
        self, node_record: NodeRecord, name_record: NameRecord | None = None
    ) -> PublishResult:
        """Publish this node's records now, and keep them published (after `start()`).

        The arguments are templates: sequence, times, signature and reflexive
        endpoints are filled in here on every publication. Both must carry this
        node's key, and the name record's name must be the node record's claim.
        """
        self._publisher.set_templates(node_record, name_record)
        if self._reflexive.endpoint is None:
            # The first node of a network had no one to ask at start().
            await self._learn_reflexive(republish=False)
        return await self._publish_now()

    def current_node_record(self) -> NodeRecord | None:
        """The signed node record last published (for gossip to carry the same bytes)."""
        return self._publisher.node_record

    def current_name_record(self) -> NameRecord | None:
        return self._publisher.name_record

    async def _publish_now(self) -> PublishResult:
        result = await self._publisher.publish(self._require_server())
        self._save_cache()  # the new sequence number must survive a restart
        return result

    # --- reflexive endpoint ---------------------------------------------------------

    def reflexive_endpoint(self) -> Endpoint | None:
        """The address:port at which other nodes see us, once learned."""
        return self._reflexive.endpoint

    async def _learn_reflexive(self, republish: bool = True) -> None:
        changed = await self._reflexive.learn(self._require_server())
        if changed and republish and self._publisher.has_templates:
            await self._publish_now()

    # --- lookups ------------------------------------------------------------------------

    async def lookup_node(self, node_id: bytes) -> NodeRecord | None:
        """The verified, unexpired record of `node_id`, or None (not found, or no answer)."""
        return await self._lookups.node(node_id)

    async def lookup_name(self, name: str) -> NodeRecord | None:
        """The node record of the holder of `name`, or None.

        Follows the name record to its holder's node record, and returns it only
        if that record still claims the name. Key names (`gm-...`) are found from
        the key itself, with no name record.
        """
        return await self._lookups.name(name)

    def stored_record(self, key: bytes) -> Record | None:
        """The verified, unexpired record this node itself holds under `key` (no network)."""
        if self._server is None:
            return None
        return self._server.storage.record(key)

    # --- peers -----------------------------------------------------------------------------

    async def probe(self, addr: Address) -> bool:
        """Whether a member of this network answers at `addr` over a direct path.

        One sealed echo (the reflexive-endpoint RPC): an answer proves the
        underlay works both ways and the peer holds the network secret. The node
        uses it to choose direct sessions over relayed ones.
        """
        return await self.observe(addr) is not None

    async def observe(self, addr: Address) -> tuple[str, int] | None:
        """How the member at `addr` sees our address:port, or None if it did not answer.

        `gossipmesh netcheck` compares these across peers to tell whether a NAT
        maps our port the same way for every destination.
        """
        server = self._running_server()
        if server is None:
            return None
        answered, payload = await server.protocol.stun(addr)
        return parse_observed(payload) if answered else None

    def known_peers(self) -> list[Peer]:
        """The contacts in the routing table (kademlia has no public API for this)."""
        if self._server is None:
            return []
        return [
            Peer(node.id, node.ip, node.port)
            for bucket in self._server.protocol.router.buckets
            for node in bucket.get_nodes()
        ]

    def known_peer_ids(self) -> list[bytes]:
        """The node ids of `known_peers()`, without building `Peer`s (for frequent callers)."""
        if self._server is None:
            return []
        return [
            node.id
            for bucket in self._server.protocol.router.buckets
            for node in bucket.get_nodes()
        ]

    def _save_cache(self) -> None:
        if self._server is not None and self._cache.state_dir is not None:
            self._cache.save(self.known_peers(), self._publisher.last_sequence)

    def _running_server(self) -> RecordServer | None:
        return None if self._stopped else self._server

    def _require_server(self) -> RecordServer:
        if self._server is None:
            raise RuntimeError("Discovery.start() has not been called")
        return self._server
