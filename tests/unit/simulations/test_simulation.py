"""Whole runs: determinism, partition and heal, lookup hops against log(N)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gossipmesh.simulations.runner import Simulation, run_scenario, write_outputs

from .conftest import make_scenario

CHURNY = """\
name = "determinism"
seed = 11
duration = 90.0
[nodes]
count = 30
start_spread = 5.0
[topology]
kind = "waxman"
[network]
jitter_ms = 5.0
loss = 0.02
[workload]
lookup_interval = 5.0
republish_interval = 30.0
[churn]
crash_rate_per_hour = 20.0
mean_downtime = 10.0
start = 20.0
[metrics]
interval = 5.0
[[events]]
at = 40.0
kind = "partition"
fraction = 0.3
[[events]]
at = 60.0
kind = "heal"
[[events]]
at = 70.0
kind = "join"
count = 4
"""


def test_same_scenario_and_seed_give_byte_identical_outputs(tmp_path: Path) -> None:
    scenario_file = tmp_path / "churny.toml"
    scenario_file.write_text(CHURNY)
    from gossipmesh.simulations.scenario import load_scenario

    first = tmp_path / "first"
    run_scenario(load_scenario(scenario_file), first)
    # The second run is another process with another hash seed: set and
    # dict ordering of str/bytes must not leak into the results.
    second = tmp_path / "second"
    code = (
        "from click.testing import CliRunner;"
        "from gossipmesh.cli.simulate import simulate;"
        f"r = CliRunner().invoke(simulate, [{str(scenario_file)!r}, '--out', {str(second)!r},"
        " '--quiet']);"
        "print(r.output); raise SystemExit(r.exit_code)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"summary.json", "timeseries.csv", "lookups.csv", "nodes.csv"} <= set(names)
    assert {"convergence.png", "overhead.png"} <= set(names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_seeds_differ() -> None:
    base = {"nodes": {"count": 15}, "workload": {"lookup_interval": 5.0}}
    one = Simulation(make_scenario(**base)).run().summary
    other = Simulation(make_scenario(seed=8, **base)).run().summary
    assert one["traffic"] != other["traffic"]


def test_a_partitioned_mesh_reconverges_after_the_heal(tmp_path: Path) -> None:
    scenario = make_scenario(
        duration=300.0,
        nodes={"count": 50, "start_spread": 10.0},
        workload={"lookup_interval": 10.0, "republish_interval": 60.0},
        metrics={"interval": 5.0},
        events=[
            {"at": 60.0, "kind": "partition", "fraction": 0.5},
            {"at": 180.0, "kind": "heal"},
        ],
    )
    result = Simulation(scenario).run()
    write_outputs(result, tmp_path, plots=False)
    rows = result.timeseries
    before = [r for r in rows if 30 <= r["time"] <= 60]
    during = [r for r in rows if 120 <= r["time"] <= 180]
    after = [r for r in rows if r["time"] >= 260]
    for row in rows:
        print(
            f"t={row['time']:5.0f} converged={row['converged']:.0f} "
            f"coverage={row['routing_coverage']:.3f} placed={row['records_placed']:.2f} "
            f"success={row['lookup_success']:.2f}"
        )
    assert all(r["converged"] == 1.0 for r in before)
    # Cut off from half the mesh, nodes drop the unreachable half of their
    # nearest neighbours from their routing tables: not converged.
    assert all(r["converged"] == 0.0 and r["routing_coverage"] < 0.8 for r in during)
    heal = next(e for e in result.summary["events"] if e["kind"] == "heal")
    print("reconverged after the heal in", heal["reconverged_after"], "s")
    assert heal["reconverged_after"] is not None and heal["reconverged_after"] <= 90
    assert all(r["converged"] == 1.0 and r["routing_coverage"] >= 0.99 for r in after)
    assert result.summary["dht"]["lookup_success_rate"] > 0.95


@pytest.mark.slow
def test_lookup_hops_grow_like_log_n() -> None:
    hops: dict[int, float] = {}
    for nodes in (50, 200, 800):
        scenario = make_scenario(
            duration=60.0,
            nodes={"count": nodes, "start_spread": 20.0},
            workload={"lookup_interval": 10.0},
            metrics={"interval": 10.0},
        )
        dht = Simulation(scenario).run().summary["dht"]
        hops[nodes] = dht["hops_mean"]
        print(
            f"N={nodes:4d}: {dht['lookups']} lookups, success {dht['lookup_success_rate']:.3f}, "
            f"hops mean {dht['hops_mean']:.3f} (p95 {dht['hops_p95']:.0f}), "
            f"nodes asked {dht['queries_mean']:.2f}, log2(N) = {math.log2(nodes):.2f}"
        )
    assert hops[50] < hops[200] < hops[800]
    # log growth adds the same per x4 of N; linear growth would add 4x as much.
    assert hops[800] - hops[200] < 2 * (hops[200] - hops[50])
    assert hops[800] < math.log2(800)
