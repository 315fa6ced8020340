"""Discovery: a private, signed Kademlia DHT on the node's one UDP port."""

from gossipmesh.discovery.peer_cache import Peer
from gossipmesh.discovery.server import StoreResult
from gossipmesh.discovery.service import Discovery, PublishResult
from gossipmesh.discovery.stats import DiscoveryStats

__all__ = ["Discovery", "DiscoveryStats", "Peer", "PublishResult", "StoreResult"]
