"""`Discovery`: the DHT as the daemon and the simulator use it.

It owns a kademlia node (`RecordServer`) whose datagrams are sealed and sent
through an injected `send(datagram, addr)` callable, and is fed received
type-5 datagrams through `datagram_received`. It uses nothing but the running
asyncio loop (its clock, `call_later`/`sleep`, and `getaddrinfo` only for
bootstrap host names), so the same code runs on the simulator's virtual-time
loop and simulated network.

Records are issued here: `publish` takes the node's claims as record
templates, and every (re)publication signs them afresh with a new sequence
number, new issue and expiry times and the current reflexive endpoint. They
are republished on change and every `republish_interval` (shorter than
`record_lifetime`), so a stopped node's records expire everywhere within one
lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gossipmesh.discovery.clock import use_loop_clock
from gossipmesh.discovery.peer_cache import (
    MAX_CACHED_PEERS,
    Peer,
    PeerCache,
    PeerCacheError,
    load_peer_cache,
    save_peer_cache,
)
from gossipmesh.discovery.seal import DatagramSeal, ReplayFilter
from gossipmesh.discovery.server import RecordServer, StoreResult
from gossipmesh.discovery.stats import DiscoveryStats
from gossipmesh.discovery.storage import RecordStorage
from gossipmesh.discovery.transport import Address, SealedTransport, SendDatagram
from gossipmesh.errors import LabelError
from gossipmesh.identity import NODE_ID_SIZE, Identity
from gossipmesh.membership import NetworkSecret
from gossipmesh.names import KEY_NAME_PREFIX, is_key_name, key_name
from gossipmesh.records import (
    MAX_ENDPOINTS,
    Endpoint,
    EndpointKind,
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
from gossipmesh.runtime.statefiles import StateError

log = logging.getLogger(__name__)

DEFAULT_RECORD_LIFETIME = 1800
"""Seconds a published record lives: how long a dead node's record can linger."""
DEFAULT_RPC_TIMEOUT = 5.0
"""rpcudp's own default wait for a reply."""
DEFAULT_REFRESH_INTERVAL = 3600.0
"""kademlia's bucket refresh period (section 2.3 of the paper)."""
REFLEXIVE_QUORUM = 3
"""Peers asked how they see us; the most common answer wins."""


@dataclass(frozen=True)
class PublishResult:
    """What one publication achieved; failures are results, never exceptions."""

    node: StoreResult
    name: StoreResult | None

    @property
    def ok(self) -> bool:
        return self.node.ok and (self.name is None or self.name.ok)


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
    ) -> None:
        """`wall_clock` gives Unix seconds for record times; by default the loop clock
        plus the offset to `time.time()` measured at `start()`, so a virtual-time
        loop moves record time too."""
        republish = record_lifetime / 3 if republish_interval is None else republish_interval
        if not 0 < republish < record_lifetime:
            raise ValueError("republish_interval must be positive and shorter than the lifetime")
        self.identity = identity
        self.stats = DiscoveryStats()
        self.state_dir = state_dir
        self.cache_problem: str | None = None
        """Why the peer cache could not be used, if it could not (reported, not fatal)."""
        self._seal = DatagramSeal(network_secret.dht_key)
        self._replays = ReplayFilter()
        self._send = send
        self._ksize = ksize
        self._alpha = alpha
        self._record_lifetime = record_lifetime
        self._republish_interval = republish
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
        self._cached_peers: tuple[Peer, ...] = ()
        self._last_sequence = 0
        self._node_template: NodeRecord | None = None
        self._name_template: NameRecord | None = None
        self._node_record: NodeRecord | None = None
        self._name_record: NameRecord | None = None
        self._reflexive: Endpoint | None = None
        self._next_refresh = 0.0

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
        storage = RecordStorage(self.now, self._loop.time)
        self._server = RecordServer(
            self.identity.node_id,
            storage,
            self.stats,
            self._accept,
            self._ksize,
            self._alpha,
            self._rpc_timeout,
        )
        self._transport = SealedTransport(self._seal, self._send, self.stats)
        self._server.protocol.connection_made(self._transport)
        self._bootstrap = list(bootstrap)
        self._load_cache()
        self._next_refresh = self._loop.time() + self._refresh_interval
        await self._join()
        self._maintenance = self._loop.create_task(self._maintain())
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
        addresses += [(p.host, p.port) for p in self._cached_peers]
        unique = list(dict.fromkeys(addresses))
        if unique:
            await server.bootstrap(unique)
        await self._learn_reflexive()

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
            await asyncio.sleep(due - loop.time())
            if self._node_template is not None:
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
        if node_record.public_key != self.identity.public_key:
            raise ValueError("can only publish this node's own node record")
        if name_record is not None and (
            name_record.public_key != self.identity.public_key
            or name_record.name != node_record.name
        ):
            raise ValueError("the name record must be this node's and match its name claim")
        self._node_template = node_record
        self._name_template = name_record
        if self._reflexive is None:
            # The first node of a network had no one to ask at start().
            await self._learn_reflexive(republish=False)
        return await self._publish_now()

    def current_node_record(self) -> NodeRecord | None:
        """The signed node record last published (for gossip to carry the same bytes)."""
        return self._node_record

    def current_name_record(self) -> NameRecord | None:
        return self._name_record

    def _next_sequence(self) -> int:
        # Milliseconds since the epoch as a floor keeps sequences rising across a
        # restart that lost the cache; the cached last value covers clock steps back.
        self._last_sequence = max(self._last_sequence + 1, int(self.now() * 1000))
        return self._last_sequence

    def _issue(self) -> tuple[NodeRecord, NameRecord | None]:
        template = self._node_template
        assert template is not None
        issued_at = int(self.now())
        expires_at = issued_at + self._record_lifetime
        endpoints = [e for e in template.endpoints if e.kind != EndpointKind.REFLEXIVE]
        if self._reflexive is not None and self._reflexive not in endpoints:
            endpoints.append(self._reflexive)
        node_record = replace(
            template,
            sequence=self._next_sequence(),
            issued_at=issued_at,
            expires_at=expires_at,
            endpoints=tuple(endpoints[:MAX_ENDPOINTS]),
        ).signed(self.identity)
        name_record = None
        if self._name_template is not None:
            name_record = replace(
                self._name_template,
                sequence=self._next_sequence(),
                issued_at=issued_at,
                expires_at=expires_at,
            ).signed(self.identity)
        return node_record, name_record

    async def _publish_now(self) -> PublishResult:
        server = self._require_server()
        node_record, name_record = self._issue()
        self._node_record, self._name_record = node_record, name_record
        stores = [self._store(server, node_record)]
        if name_record is not None:
            stores.append(self._store(server, name_record))
        results = await asyncio.gather(*stores)
        self._save_cache()
        return PublishResult(results[0], results[1] if name_record is not None else None)

    async def _store(self, server: RecordServer, record: Record) -> StoreResult:
        try:
            return await server.store(record_key(record), record.encode())
        except RecordError as refusal:
            # Our own record refused locally (for example a name someone holds
            # with an earlier claim): a result, reported and counted.
            self.stats.refuse(refusal.reason)
            log.warning("own record not published: %s", refusal)
            return StoreResult(0, 0)

    # --- reflexive endpoint ---------------------------------------------------------

    def reflexive_endpoint(self) -> Endpoint | None:
        """The address:port at which other nodes see us, once learned."""
        return self._reflexive

    async def _learn_reflexive(self, republish: bool = True) -> None:
        server = self._require_server()
        peers = server.protocol.router.find_neighbors(server.node, k=REFLEXIVE_QUORUM)
        if not peers:
            return
        replies = await asyncio.gather(*(server.protocol.stun((p.ip, p.port)) for p in peers))
        seen: Counter[tuple[str, int]] = Counter()
        for answered, payload in replies:
            endpoint = _parse_observed(payload) if answered else None
            if endpoint is not None:
                seen[endpoint] += 1
        if not seen:
            return
        host, port = seen.most_common(1)[0][0]
        learned = Endpoint(EndpointKind.REFLEXIVE, host, port)
        if learned != self._reflexive:
            self._reflexive = learned
            if republish and self._node_template is not None:
                await self._publish_now()

    # --- lookups ------------------------------------------------------------------------

    async def lookup_node(self, node_id: bytes) -> NodeRecord | None:
        """The verified, unexpired record of `node_id`, or None (not found, or no answer)."""
        if self._server is None or self._stopped or len(node_id) != NODE_ID_SIZE:
            return None
        record = await self._fetch(node_id)
        return record if isinstance(record, NodeRecord) else None

    async def lookup_name(self, name: str) -> NodeRecord | None:
        """The node record of the holder of `name`, or None.

        Follows the name record to its holder's node record, and returns it only
        if that record still claims the name. Key names (`gm-...`) are found from
        the key itself, with no name record.
        """
        try:
            key = name_key(name)
        except LabelError:
            return None
        if self._server is None or self._stopped:
            return None
        if is_key_name(name):
            return await self._lookup_key_name(name.lower())
        name_record = await self._fetch(key)
        if not isinstance(name_record, NameRecord):
            return None
        node_record = await self.lookup_node(name_record.node_id)
        if node_record is None or node_record.name != name_record.name:
            return None
        return node_record

    async def _lookup_key_name(self, name: str) -> NodeRecord | None:
        """A key name (`gm-` + base32 of the node id's first 80 bits) needs no name
        record: the node whose id starts with those bits is the closest of all to
        them by XOR distance, so a node lookup of the prefix finds its full id."""
        try:
            prefix = base64.b32decode(name[len(KEY_NAME_PREFIX) :].upper())
        except (binascii.Error, ValueError):
            return None
        if self.identity.node_id.startswith(prefix):
            return await self.lookup_node(self.identity.node_id)
        self.stats.lookups += 1
        try:
            candidates = await self._require_server().closest_nodes(
                prefix + bytes(NODE_ID_SIZE - len(prefix))
            )
        except Exception:
            log.exception("DHT node lookup failed")
            candidates = []
        for node_id in {n.id for n in candidates if n.id.startswith(prefix)}:
            record = await self.lookup_node(node_id)
            if record is not None and key_name(record.node_id) == name:
                return record
        self.stats.lookups_failed += 1
        return None

    async def _fetch(self, key: bytes) -> Record | None:
        self.stats.lookups += 1
        try:
            record = await self._require_server().fetch(key)
        except Exception:
            # A guard, not a path we expect: a lookup reports "not found", never raises.
            log.exception("DHT lookup failed")
            record = None
        if record is None:
            self.stats.lookups_failed += 1
        return record

    def _accept(self, key: bytes, value: object) -> Record | None:
        """The lookup path's second verification of a fetched value; refusals are counted."""
        try:
            if not isinstance(value, bytes):
                raise RecordError(RefusalReason.MALFORMED, "a stored value is bytes")
            record = decode_record(value)
            if record_key(record) != key:
                raise RecordError(RefusalReason.WRONG_KEY)
            return validate(record, self.now())
        except RecordError as refusal:
            self.stats.refuse(refusal.reason)
            return None

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
        if self._server is None or self._stopped:
            return None
        answered, payload = await self._server.protocol.stun(addr)
        return _parse_observed(payload) if answered else None

    def known_peers(self) -> list[Peer]:
        """The contacts in the routing table (kademlia has no public API for this)."""
        if self._server is None:
            return []
        return [
            Peer(node.id, node.ip, node.port)
            for bucket in self._server.protocol.router.buckets
            for node in bucket.get_nodes()
        ]

    def _load_cache(self) -> None:
        if self.state_dir is None:
            return
        try:
            cache = load_peer_cache(self.state_dir)
        except PeerCacheError as exc:
            self.cache_problem = str(exc)
            self.stats.cache_errors += 1
            log.warning("%s", exc)
            return
        if cache is None:
            return
        self._cached_peers = cache.peers
        if cache.node_id == self.identity.node_id:
            self._last_sequence = max(self._last_sequence, cache.last_sequence)

    def _save_cache(self) -> None:
        if self.state_dir is None or self._server is None:
            return
        own = self._server.node
        peers = sorted(self.known_peers(), key=lambda p: int.from_bytes(p.node_id) ^ own.long_id)
        cache = PeerCache(
            self.identity.node_id,
            self._last_sequence,
            tuple(peers[:MAX_CACHED_PEERS]) or self._cached_peers,
        )
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            save_peer_cache(self.state_dir, cache)
        except (OSError, StateError) as exc:
            self.stats.cache_errors += 1
            log.warning("peer cache not saved: %s", exc)

    def _require_server(self) -> RecordServer:
        if self._server is None:
            raise RuntimeError("Discovery.start() has not been called")
        return self._server


def _parse_observed(payload: object) -> tuple[str, int] | None:
    """A stun reply: [host, port] as the peer saw our datagram."""
    if not isinstance(payload, list) or len(payload) != 2:
        return None
    host, port = payload
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        return None
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        return None
    return (host, port) if 1 <= port <= 65535 else None
