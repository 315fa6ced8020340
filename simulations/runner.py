"""Run a scenario: build the underlay, start nodes, apply events, sample metrics.

`Simulation(scenario).run()` returns a `SimulationResult`; `write_outputs`
writes it to a directory (summary.json, timeseries.csv, one CSV per table,
plots). Every random choice derives from the scenario's seed through named
streams (`random.Random(f"{seed}:{purpose}")`), so the same scenario and
seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.kademlia_env import kademlia_in_simulation
from gossipmesh.simulations.kademlia_workload import KademliaParams, KademliaWorkload
from gossipmesh.simulations.metrics import MetricCollector, TrafficMetrics, write_csv, write_json
from gossipmesh.simulations.network import SimNetwork
from gossipmesh.simulations.scenario import EventSpec, Scenario, ScenarioError
from gossipmesh.simulations.topology import ShortestPathUnderlay, TopologyError, build_topology
from gossipmesh.simulations.workload import NodeContext, SimulatedNode, Workload

__all__ = ["Simulation", "SimulationResult", "run_scenario", "write_outputs"]

ProgressCallback = Callable[[float, float], None]


@dataclass
class SimulationResult:
    """What a run produced: a timeseries, a summary, tables and cost figures."""

    scenario: Scenario
    timeseries: list[dict[str, float]]
    summary: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    event_log: list[dict[str, Any]]
    wall_seconds: float = 0.0
    loop_events: int = 0
    unhandled_errors: list[str] = field(default_factory=list)


def _node_id(seed: int, host: int) -> bytes:
    """A 20-byte kademlia node id for a host, fixed by the seed."""
    return hashlib.sha1(f"gossipmesh-sim:{seed}:{host}".encode()).digest()


class Simulation:
    """One run of one scenario on a fresh virtual-time loop and network."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        seed = scenario.seed
        self.rng = random.Random(f"{seed}:events")
        try:
            graph = build_topology(
                scenario.topology,
                scenario.hosts,
                scenario.topology_params,
                seed,
                scenario.base_dir,
            )
        except TopologyError as exc:
            raise ScenarioError(f"{scenario.source}: topology: {exc}") from None
        self.graph = graph
        self.loop = VirtualTimeLoop()
        self.errors: list[str] = []
        self._finished = False
        self.loop.set_exception_handler(self._record_error)
        self.underlay = ShortestPathUnderlay(graph)
        self.network = SimNetwork(
            self.loop,
            self.underlay,
            random.Random(f"{seed}:network"),
            jitter=scenario.jitter,
            loss=scenario.loss,
        )
        for host in range(scenario.hosts):
            self.network.add_host(host)
            if scenario.uplink_kbps:
                self.network.set_uplink(host, scenario.uplink_kbps * 1000)
        self.bootstrap = [self.network.address_of(h) for h in range(scenario.bootstrap_nodes)]
        self.workload: Workload = self._make_workload()
        self.nodes: dict[int, SimulatedNode] = {}
        self._up: dict[int, bool] = {}
        self._live = 0
        self._node_seconds = 0.0
        self._last_change = 0.0
        self._next_joiner = scenario.nodes
        self.collectors: list[MetricCollector] = [
            TrafficMetrics(self.network, lambda: self._live, self.node_seconds),
            *self.workload.collectors(),
        ]
        self.timeseries: list[dict[str, float]] = []
        self.event_log: list[dict[str, Any]] = []

    def _make_workload(self) -> Workload:
        scenario = self.scenario
        if scenario.workload == "discovery":
            from gossipmesh.simulations.discovery_workload import (
                DiscoveryParams,
                DiscoveryWorkload,
            )

            table = scenario.workload_params
            return DiscoveryWorkload(DiscoveryParams.from_table(table, scenario.source), self)
        if scenario.workload == "mesh":
            from gossipmesh.simulations.mesh_workload import MeshParams, MeshWorkload

            mesh = MeshParams.from_table(scenario.workload_params, scenario.source)
            return MeshWorkload(mesh, self, self.underlay, self.graph, scenario.seed)
        params = KademliaParams.from_table(scenario.workload_params, scenario.source)
        return KademliaWorkload(params, self)

    def _record_error(self, loop: Any, context: dict[str, Any]) -> None:
        """Errors inside the nodes' tasks are counted and reported, not printed."""
        if self._finished:
            return  # tasks abandoned at the end of the run, not the nodes' errors
        exception = context.get("exception")
        text = f"{context.get('message', '')}: {exception!r}" if exception else context["message"]
        if len(self.errors) < 1000:
            self.errors.append(text)

    # -- node lifecycle -----------------------------------------------------

    def live_hosts(self) -> list[int]:
        """Hosts whose node is running, in host order."""
        return [h for h, up in sorted(self._up.items()) if up]

    def node_seconds(self) -> float:
        """Live nodes integrated over virtual time so far (for per-node rates)."""
        now = self.loop.time()
        return self._node_seconds + self._live * (now - self._last_change)

    def _set_up(self, host: int, up: bool) -> None:
        self._node_seconds = self.node_seconds()
        self._last_change = self.loop.time()
        self._live += 1 if up else -1
        self._up[host] = up

    def start_node(self, host: int) -> None:
        if self._up.get(host):
            return
        node = self.nodes.get(host)
        if node is None:
            context = NodeContext(
                host=host,
                address=self.network.address_of(host),
                node_id=_node_id(self.scenario.seed, host),
                bootstrap=self.bootstrap,
                rng=random.Random(f"{self.scenario.seed}:node:{host}"),
            )
            node = self.workload.create_node(context)
            self.nodes[host] = node
        node.start(self.network.bind(host), self.loop)
        self._set_up(host, True)

    def crash_node(self, host: int) -> None:
        if not self._up.get(host):
            return
        self.nodes[host].stop()
        self._set_up(host, False)

    # -- events --------------------------------------------------------------

    def _choose(self, event: EventSpec, pool: list[int]) -> list[int]:
        if event.nodes:
            return list(event.nodes)
        if event.count is not None:
            return sorted(self.rng.sample(pool, min(event.count, len(pool))))
        if event.fraction is not None:
            return sorted(self.rng.sample(pool, round(event.fraction * len(pool))))
        return pool

    def apply_event(self, event: EventSpec) -> None:
        """Do what `event` says, now."""
        now = self.loop.time()
        live = self.live_hosts()
        affected: list[int] = []
        if event.kind == "partition":
            if event.groups:
                self.network.partition(event.groups)
                affected = sorted(h for g in event.groups for h in g)
            else:
                affected = self._choose(event, list(range(self.scenario.hosts)))
                self.network.partition([affected])
        elif event.kind == "heal":
            self.network.heal()
        elif event.kind == "crash":
            affected = self._choose(event, live)
            for host in affected:
                self.crash_node(host)
            if event.downtime:
                self.loop.call_at(now + event.downtime, self._restart_all, affected)
        elif event.kind == "restart":
            down = [h for h, up in sorted(self._up.items()) if not up]
            affected = self._choose(event, down)
            self._restart_all(affected)
        elif event.kind == "join":
            count = event.count or 0
            affected = list(range(self._next_joiner, self._next_joiner + count))
            self._next_joiner += count
            self._restart_all(affected)
        elif event.kind == "mass_restart":
            affected = live
            for host in affected:
                self.crash_node(host)
            if event.downtime:
                self.loop.call_at(now + event.downtime, self._restart_all, affected)
            else:
                self._restart_all(affected)
        self.event_log.append({"at": now, "kind": event.kind, "hosts": len(affected)})

    def _restart_all(self, hosts: list[int]) -> None:
        for host in hosts:
            self.start_node(host)

    def _schedule_churn(self) -> None:
        churn = self.scenario.churn
        if churn is None or churn.crash_rate_per_hour <= 0:
            return
        rng = random.Random(f"{self.scenario.seed}:churn")
        end = self.scenario.duration if churn.end is None else churn.end
        first = self.scenario.bootstrap_nodes if churn.protect_bootstrap else 0
        for host in range(first, self.scenario.nodes):
            at = churn.start
            while True:
                at += rng.expovariate(churn.crash_rate_per_hour / 3600.0)
                if at >= end:
                    break
                downtime = rng.expovariate(1.0 / churn.mean_downtime)
                self.loop.call_at(at, self.crash_node, host)
                self.loop.call_at(at + downtime, self.start_node, host)
                at += downtime

    def _sample(self) -> None:
        now = self.loop.time()
        row: dict[str, float] = {"time": now}
        converged: list[float] = []
        for collector in self.collectors:
            values = collector.sample(now)
            if "converged" in values:
                converged.append(values.pop("converged"))
            row.update(values)
        row["converged"] = 1.0 if converged and all(v == 1.0 for v in converged) else 0.0
        self.timeseries.append(row)

    # -- the run ---------------------------------------------------------------

    def run(self, progress: ProgressCallback | None = None) -> SimulationResult:
        """Run the scenario to its duration; `progress(now, duration)` now and then."""
        scenario = self.scenario
        wall_start = time.perf_counter()
        with kademlia_in_simulation(self.loop, random.Random(f"{scenario.seed}:kademlia")):
            start_rng = random.Random(f"{scenario.seed}:start")
            for host in range(scenario.nodes):
                at = 0.0 if host < scenario.bootstrap_nodes else start_rng.uniform(0, 1)
                self.loop.call_at(at * scenario.start_spread, self.start_node, host)
            for event in scenario.events:
                self.loop.call_at(event.at, self.apply_event, event)
            self._schedule_churn()
            samples = math.floor(scenario.duration / scenario.metrics_interval + 1e-9)
            for number in range(1, samples + 1):
                self.loop.call_at(number * scenario.metrics_interval, self._sample)
            step = max(scenario.metrics_interval, scenario.duration / 100)
            now = 0.0
            while now < scenario.duration:
                now = min(scenario.duration, now + step)
                self.loop.run_until(now)
                if progress is not None:
                    progress(now, scenario.duration)
            self._finished = True
            for host in self.live_hosts():
                self.crash_node(host)
            self.loop.run_until(self.loop.time())  # let the nodes' stop() run
        # Tasks still waiting on replies are abandoned with the loop; their
        # "destroyed but pending" reports go to _record_error, which ignores them.
        self.loop.close()
        return self._result(time.perf_counter() - wall_start)

    def _result(self, wall_seconds: float) -> SimulationResult:
        scenario = self.scenario
        summary: dict[str, Any] = {
            "scenario": scenario.name,
            "seed": scenario.seed,
            "nodes": scenario.nodes,
            "hosts": scenario.hosts,
            "duration": scenario.duration,
            "topology": scenario.topology,
            "loop_events": self.loop.events_run,
            "task_errors": len(self.errors),
        }
        for collector in self.collectors:
            summary[collector.name] = collector.summary()
        summary["events"] = self._reconvergence()
        summary["time_to_convergence"] = next(
            (row["time"] for row in self.timeseries if row["converged"] == 1.0), None
        )
        tables: dict[str, list[dict[str, Any]]] = {}
        for collector in self.collectors:
            tables.update(collector.tables())
        return SimulationResult(
            scenario=scenario,
            timeseries=self.timeseries,
            summary=summary,
            tables=tables,
            event_log=self.event_log,
            wall_seconds=wall_seconds,
            loop_events=self.loop.events_run,
            unhandled_errors=list(self.errors),
        )

    def _reconvergence(self) -> list[dict[str, Any]]:
        """For each event: when the mesh was next converged, and how long that took."""
        report = []
        for entry in self.event_log:
            after = next(
                (
                    row["time"]
                    for row in self.timeseries
                    if row["time"] > entry["at"] and row["converged"] == 1.0
                ),
                None,
            )
            report.append(
                {
                    **entry,
                    "converged_at": after,
                    "reconverged_after": None if after is None else after - entry["at"],
                }
            )
        return report


def write_outputs(result: SimulationResult, out_dir: Path, *, plots: bool = True) -> list[Path]:
    """Write summary.json, timeseries.csv, the tables and the plots to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "summary.json", out_dir / "timeseries.csv"]
    write_json(written[0], result.summary)
    write_csv(written[1], result.timeseries)
    for name, rows in sorted(result.tables.items()):
        path = out_dir / f"{name}.csv"
        write_csv(path, rows)
        written.append(path)
    if plots:
        from gossipmesh.simulations.plots import plot_run

        written += plot_run(result, out_dir)
    return written


def run_scenario(
    scenario: Scenario, out_dir: Path | None = None, progress: ProgressCallback | None = None
) -> SimulationResult:
    """Run `scenario` and, given `out_dir`, write its outputs there."""
    result = Simulation(scenario).run(progress)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result
