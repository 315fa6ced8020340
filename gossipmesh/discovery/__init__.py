"""Discovery: a private, signed Kademlia DHT on the node's one UDP port."""
