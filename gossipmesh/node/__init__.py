"""The node: one mesh member as a sans-IO core, and the parts it is made of.

Read `core.py` first; `docs/architecture.md` has the map.
"""

from gossipmesh.node.core import NodeCore
from gossipmesh.node.events import RelayAddress
from gossipmesh.node.options import MESH_MTU, NodeCounters, NodeOptions

__all__ = ["MESH_MTU", "NodeCore", "NodeCounters", "NodeOptions", "RelayAddress"]
