"""Stream links: bulk IP traffic between two gossipmesh nodes over one TCP connection.

The UDP data plane pays one AEAD call and one datagram per 1,328-byte packet.
Between two gossipmesh nodes that both offer it, a stream link carries the
TUN's 64 KiB TCP super-packets whole, sealed in large frames, so the cost
per byte drops by an order of magnitude; the kernel's TCP retransmits a lost
underlay segment and nothing else. Everything here is sans-IO: the frame
codec (`frames`), the negotiation messages (`messages`) and the negotiation
state (`planner`). The TCP sockets live in `gossipmesh.runtime.links`.
"""
