"""The full gossipmesh node on the simulator: convergence, churn, mass restart, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gossipmesh.simulations.clock import VirtualTimeLoop
from gossipmesh.simulations.mesh_metrics import echo_probe, probe_serial
from gossipmesh.simulations.runner import Simulation, run_scenario
from gossipmesh.simulations.scenario import load_scenario

from .conftest import make_scenario

MESH_CHURN = """\
name = "mesh-determinism"
seed = 5
duration = 60.0
[nodes]
count = 20
start_spread = 5.0
[topology]
kind = "random_geometric"
[network]
jitter_ms = 2.0
loss = 0.01
[workload]
kind = "mesh"
data_probe_interval = 1.0
data_probe_pairs = 5
# The full mesh (no neighbour bound at 20 nodes): this test pins convergence,
# churn and determinism; the bounded overlay has its own test below.
max_neighbours = 32
[metrics]
interval = 5.0
[[events]]
at = 30.0
kind = "crash"
count = 3
downtime = 10.0
"""


def test_a_data_probe_is_recognised_only_by_its_tag() -> None:
    packet = echo_probe(bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2]), 70_000)
    assert probe_serial(packet) == 70_000
    assert probe_serial(packet[:40]) is None
    assert probe_serial(packet[:28] + b"otherxxx" + packet[36:]) is None


def test_mesh_converges_under_churn_and_runs_are_byte_identical(tmp_path: Path) -> None:
    scenario_file = tmp_path / "mesh.toml"
    scenario_file.write_text(MESH_CHURN)
    first = tmp_path / "first"
    result = run_scenario(load_scenario(scenario_file), first)
    mesh, probes = result.summary["mesh"], result.summary["probes"]
    print(mesh, probes, result.summary["traffic"], result.summary["events"])
    assert result.summary["task_errors"] == 0
    assert mesh["time_all_records_known"] is not None
    assert mesh["time_all_routes_optimal"] is not None
    assert mesh["final"]["records_known"] == 1.0
    assert mesh["final"]["routes_optimal"] == 1.0
    assert 1.0 <= mesh["stretch_median"] <= mesh["stretch_max"]
    assert probes["decided"] >= 200
    assert 0.8 < probes["delivery_ratio"] <= 1.0
    crash = result.summary["events"][0]
    assert crash["kind"] == "crash" and crash["reconverged_after"] is not None
    assert (first / "stretch.csv").exists() and (first / "stretch_cdf.png").exists()

    # Another process with another hash seed gives the same bytes.
    second = tmp_path / "second"
    code = (
        "from gossipmesh.simulations.runner import run_scenario;"
        "from gossipmesh.simulations.scenario import load_scenario;"
        f"run_scenario(load_scenario({str(scenario_file)!r}), __import__('pathlib').Path("
        f"{str(second)!r}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_after_a_mass_restart_traffic_stays_bounded_and_the_mesh_reconverges() -> None:
    scenario = make_scenario(
        duration=100.0,
        nodes={"count": 20, "start_spread": 5.0},
        topology={"kind": "barabasi_albert", "m": 2, "min_link_ms": 2.0, "max_link_ms": 40.0},
        network={"jitter_ms": 2.0},
        workload={"kind": "mesh", "max_neighbours": 32},  # the full mesh, as above
        metrics={"interval": 5.0},
        events=[{"at": 50.0, "kind": "mass_restart", "downtime": 0.0}],
    )
    result = Simulation(scenario).run()
    rows = result.timeseries
    join_peak = max(r["bytes_per_node_s"] for r in rows if r["time"] <= 50.0)
    restart_peak = max(r["bytes_per_node_s"] for r in rows if r["time"] > 50.0)
    tail = [r["bytes_per_node_s"] for r in rows if r["time"] > 80.0]
    restart = result.summary["events"][0]
    print(f"join peak {join_peak:.0f} B/node/s, after restart {restart_peak:.0f}, tail {tail}")
    print(restart)
    assert result.summary["task_errors"] == 0
    assert restart["kind"] == "mass_restart" and restart["hosts"] == 20
    # No amplification: the restart costs no more than the first join, and settles.
    assert restart_peak <= 1.5 * join_peak
    assert max(tail) < 0.5 * restart_peak
    assert restart["reconverged_after"] is not None and restart["reconverged_after"] <= 30.0
    assert rows[-1]["records_known"] == 1.0 and rows[-1]["routes_optimal"] == 1.0


def test_with_only_underlay_links_the_mesh_relays_over_optimal_multi_hop_routes() -> None:
    scenario = make_scenario(
        duration=90.0,
        nodes={"count": 20, "start_spread": 5.0},
        topology={"kind": "random_geometric"},
        network={"jitter_ms": 1.0},
        workload={"kind": "mesh", "underlay_links_only": True, "data_probe_interval": 2.0},
        metrics={"interval": 5.0},
    )
    result = Simulation(scenario).run()
    mesh, probes = result.summary["mesh"], result.summary["probes"]
    print(mesh, probes)
    assert result.summary["task_errors"] == 0
    final = mesh["final"]
    assert final["records_known"] == 1.0 and final["routes_optimal"] == 1.0
    assert final["route_hops"] > 1.2  # relayed, not a full mesh of direct links
    assert final["mesh_degree"] < 10
    assert mesh["stretch_max"] >= 1.0
    late = [r["probe_delivery"] for r in result.timeseries if r["time"] >= 60.0]
    assert min(late) == 1.0


def test_on_an_open_underlay_the_overlay_keeps_its_bound_and_reaches_everyone() -> None:
    scenario = make_scenario(
        duration=90.0,
        nodes={"count": 30, "start_spread": 5.0},
        topology={"kind": "barabasi_albert", "m": 2, "min_link_ms": 2.0, "max_link_ms": 40.0},
        network={"jitter_ms": 1.0},
        workload={"kind": "mesh", "max_neighbours": 6, "data_probe_interval": 2.0},
        metrics={"interval": 5.0},
    )
    result = Simulation(scenario).run()
    mesh, probes = result.summary["mesh"], result.summary["probes"]
    print(mesh, probes, result.summary["traffic"])
    assert result.summary["task_errors"] == 0
    # Every node reaches all 29 others directly, yet none keeps more than 6 (agreed) links.
    assert max(row["mesh_degree_max"] for row in result.timeseries) <= 6
    assert mesh["final"]["mesh_degree"] >= 4  # and the graph is not starved either
    final = mesh["final"]
    assert final["records_known"] == 1.0 and final["routes_reachable"] == 1.0
    late = [r["probe_delivery"] for r in result.timeseries if r["time"] >= 60.0]
    assert min(late) == 1.0


MESH_ORACLE = (
    MESH_CHURN.replace('kind = "mesh"\n', 'kind = "mesh"\ndht = "oracle"\n')
    .replace("max_neighbours = 32\n", "max_neighbours = 8\n")
    .replace("duration = 60.0\n", "duration = 80.0\n")
    + """\
[[events]]
at = 40.0
kind = "partition"
fraction = 0.5
[[events]]
at = 48.0
kind = "heal"
"""
)


def test_with_the_oracle_dht_the_mesh_converges_with_no_task_and_identical_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks: list[object] = []
    create_task = VirtualTimeLoop.create_task

    def counting(self: VirtualTimeLoop, *args: Any, **kwargs: Any) -> Any:
        tasks.append(args[0])
        return create_task(self, *args, **kwargs)

    monkeypatch.setattr(VirtualTimeLoop, "create_task", counting)
    scenario_file = tmp_path / "oracle.toml"
    scenario_file.write_text(MESH_ORACLE)
    first = tmp_path / "first"
    result = run_scenario(load_scenario(scenario_file), first)
    mesh, probes = result.summary["mesh"], result.summary["probes"]
    print(mesh, probes, result.summary["events"])
    assert tasks == []  # no task per node, per request or per probe
    assert result.summary["task_errors"] == 0
    assert mesh["dht"] == "oracle"
    assert mesh["time_all_records_known"] is not None
    assert mesh["final"]["records_known"] == 1.0 and mesh["final"]["routes_reachable"] == 1.0
    assert 0.7 < probes["delivery_ratio"] <= 1.0
    assert mesh["time_all_routes_reachable"] is not None
    assert mesh["mesh_degree_max_seen"] <= 8
    assert [e["kind"] for e in result.summary["events"]] == ["crash", "partition", "heal"]

    second = tmp_path / "second"
    code = (
        "from gossipmesh.simulations.runner import run_scenario;"
        "from gossipmesh.simulations.scenario import load_scenario;"
        f"run_scenario(load_scenario({str(scenario_file)!r}), __import__('pathlib').Path("
        f"{str(second)!r}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "77"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    for name in sorted(p.name for p in first.iterdir()):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
