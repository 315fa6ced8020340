"""gossipmesh: a peer-to-peer mesh VPN daemon with no central server."""

__version__ = "0.1.0"
