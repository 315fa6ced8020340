"""The peers a node knew at its last run, so a restarted node rejoins with no --bootstrap.

Plain JSON (kademlia's own `save_state`/`load_state` use pickle, which must
never load a file), written atomically (temporary file, fsync, rename) through
the runtime's state-file helpers. The cache also keeps the last record sequence
number, so records issued after a restart are newer than the ones peers hold.
A missing cache is normal; a corrupt one is reported and ignored.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gossipmesh.discovery.stats import DiscoveryStats
from gossipmesh.identity import NODE_ID_SIZE
from gossipmesh.statefiles import StateError, read_json, write_json

CACHE_FILE_NAME = "peers.json"
CACHE_VERSION = 1
MAX_CACHED_PEERS = 32

log = logging.getLogger(__name__)


class PeerCacheError(ValueError):
    """The peer cache exists but cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Peer:
    """A DHT contact: its node id and the address we reach it at."""

    node_id: bytes
    host: str
    port: int


@dataclass(frozen=True)
class PeerCache:
    node_id: bytes
    """Whose cache this is: a sequence number only carries over for the same key."""
    last_sequence: int
    peers: tuple[Peer, ...]


class PeerCacheKeeper:
    """One node's cache across runs: problems are counted and reported, never fatal."""

    def __init__(self, state_dir: Path | None, node_id: bytes, stats: DiscoveryStats) -> None:
        self.state_dir = state_dir
        self._node_id = node_id
        self._stats = stats
        self.problem: str | None = None
        """Why the cache could not be used, if it could not."""
        self.peers: tuple[Peer, ...] = ()
        """The peers of the last run (kept as the fallback when none are known now)."""
        self.last_sequence = 0
        """The last record sequence of the last run, if it was this node's cache."""

    def load(self) -> None:
        if self.state_dir is None:
            return
        try:
            cache = load_peer_cache(self.state_dir)
        except PeerCacheError as exc:
            self.problem = str(exc)
            self._stats.cache_errors += 1
            log.warning("%s", exc)
            return
        if cache is None:
            return
        self.peers = cache.peers
        if cache.node_id == self._node_id:
            self.last_sequence = cache.last_sequence

    def save(self, known: Iterable[Peer], last_sequence: int) -> None:
        """Keep the closest known peers (XOR distance), or the last run's if none are known."""
        if self.state_dir is None:
            return
        own = int.from_bytes(self._node_id)
        peers = sorted(known, key=lambda p: int.from_bytes(p.node_id) ^ own)
        cache = PeerCache(
            self._node_id, last_sequence, tuple(peers[:MAX_CACHED_PEERS]) or self.peers
        )
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            save_peer_cache(self.state_dir, cache)
        except (OSError, StateError) as exc:
            self._stats.cache_errors += 1
            log.warning("peer cache not saved: %s", exc)


def cache_path(state_dir: Path) -> Path:
    return state_dir / CACHE_FILE_NAME


def save_peer_cache(state_dir: Path, cache: PeerCache) -> None:
    """Write the cache atomically (raises StateError when the disk refuses)."""
    write_json(
        cache_path(state_dir),
        {
            "version": CACHE_VERSION,
            "node_id": cache.node_id.hex(),
            "last_sequence": cache.last_sequence,
            "peers": [
                {"node_id": p.node_id.hex(), "host": p.host, "port": p.port}
                for p in cache.peers[:MAX_CACHED_PEERS]
            ],
        },
    )


def load_peer_cache(state_dir: Path) -> PeerCache | None:
    """The cache of the last run; None when there is none; PeerCacheError when unusable."""
    path = cache_path(state_dir)
    try:
        content = read_json(path)
    except StateError as exc:
        raise PeerCacheError(str(exc)) from None
    if content is None:
        return None
    try:
        return _parse(content)
    except (KeyError, TypeError, ValueError) as exc:
        raise PeerCacheError(f"{path}: peer cache is corrupt ({exc}); ignoring it") from None


def _parse(content: object) -> PeerCache:
    if not isinstance(content, dict) or content.get("version") != CACHE_VERSION:
        raise ValueError("unknown format or version")
    node_id = bytes.fromhex(content["node_id"])
    last_sequence = content["last_sequence"]
    if len(node_id) != NODE_ID_SIZE or not isinstance(last_sequence, int) or last_sequence < 0:
        raise ValueError("bad node id or sequence")
    peers = []
    for entry in content["peers"][:MAX_CACHED_PEERS]:
        peer_id = bytes.fromhex(entry["node_id"])
        host = str(ipaddress.ip_address(entry["host"]))
        port = entry["port"]
        if len(peer_id) != NODE_ID_SIZE or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError("bad peer entry")
        peers.append(Peer(peer_id, host, port))
    return PeerCache(node_id, last_sequence, tuple(peers))
