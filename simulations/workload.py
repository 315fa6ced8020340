"""What the simulator asks of a node and of the workload that makes nodes.

A node is something with `start(endpoint, loop)` and `stop()` that sends
and receives datagrams through the endpoint (`SimEndpoint`, an
`asyncio.DatagramTransport`): give the endpoint to the node's protocol
with `endpoint.attach(protocol)` and send with `endpoint.sendto`. The same
node object is started again after a crash; what it keeps across a
restart (a peer cache, its key) is up to it, as for a real daemon.

A workload creates the nodes and the metric collectors that understand
them. Phase 1 runs real kademlia nodes (`kademlia_workload`); the full
gossipmesh node plugs in here as another workload.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.metrics import MetricCollector
from gossipmesh.simulations.network import Address, SimEndpoint, SimNetwork
from gossipmesh.simulations.scenario import ScenarioError

__all__ = ["LiveView", "NodeContext", "SimulatedNode", "Workload", "params_from_table"]

P = TypeVar("P")


class SimulatedNode(Protocol):
    """A node in the simulation: it only talks through its endpoint."""

    def start(self, endpoint: SimEndpoint, loop: VirtualTimeLoop) -> None:
        """Begin (or begin again after a crash) using `endpoint`."""
        ...

    def stop(self) -> None:
        """Crash: close the endpoint and stop sending; state in memory is lost."""
        ...


@dataclass(frozen=True)
class NodeContext:
    """What the simulator tells a workload about a node it should create."""

    host: int
    address: Address
    node_id: bytes
    bootstrap: Sequence[Address]
    rng: random.Random


class Workload(Protocol):
    """Makes nodes and the collectors that measure them."""

    def create_node(self, context: NodeContext) -> SimulatedNode: ...

    def collectors(self) -> list[MetricCollector]: ...


class LiveView(Protocol):
    """The simulator's view of which hosts are up (for collectors)."""

    network: SimNetwork

    def live_hosts(self) -> list[int]: ...


def params_from_table(cls: type[P], table: Mapping[str, Any], source: str) -> P:
    """A workload's frozen-dataclass parameters from its `[workload]` table.

    Every key must be a field; numbers must be positive, integers where the
    default is an integer; booleans and strings where the default is one.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in defaults:
            raise ScenarioError(f"{source}: workload.{key}: is not a known key")
        default = defaults[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ScenarioError(f"{source}: workload.{key}: must be true or false")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ScenarioError(f"{source}: workload.{key}: must be a string")
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ScenarioError(f"{source}: workload.{key}: must be a number")
            if value <= 0:
                raise ScenarioError(f"{source}: workload.{key}: must be > 0")
            if isinstance(default, int) and not isinstance(value, int):
                raise ScenarioError(f"{source}: workload.{key}: must be an integer")
        values[key] = value
    return cls(**values)
