"""Sweeps on local processes and on a Dask cluster give the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossipmesh.simulations.scenario import ScenarioError
from gossipmesh.simulations.sweep import expand_grid, parse_grid_option, parse_seeds, run_sweep

from .conftest import make_scenario

GRID = {"nodes.count": [8, 12]}
SEEDS = [1, 2]


def tiny() -> object:
    return make_scenario(
        duration=30.0,
        nodes={"count": 8, "start_spread": 2.0},
        workload={"lookup_interval": 5.0},
        metrics={"interval": 5.0},
    )


def test_grid_and_seed_parsing() -> None:
    assert parse_seeds("1,3-5") == [1, 3, 4, 5]
    assert parse_grid_option(["nodes.count=50,200", "network.loss=0.01"]) == {
        "nodes.count": [50, 200],
        "network.loss": [0.01],
    }
    points = expand_grid({"a": [1, 2], "b": ["x"]}, [7, 8])
    assert [p.run_id for p in points] == [
        "a-1_b-x_seed-7",
        "a-1_b-x_seed-8",
        "a-2_b-x_seed-7",
        "a-2_b-x_seed-8",
    ]
    with pytest.raises(ScenarioError):
        parse_seeds("one")
    with pytest.raises(ScenarioError):
        parse_grid_option(["nodes.count"])


def test_local_and_dask_sweeps_agree(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    local = run_sweep(tiny(), GRID, SEEDS, tmp_path / "local", workers=2)  # type: ignore[arg-type]
    assert [(r["nodes"], r["seed"]) for r in local] == [(8, 1), (8, 2), (12, 1), (12, 2)]
    assert (tmp_path / "local" / "sweep.csv").exists()
    assert (tmp_path / "local" / "hops_vs_n.png").exists()
    assert (tmp_path / "local" / "overhead_vs_n.png").exists()
    assert (tmp_path / "local" / "runs" / "nodes.count-12_seed-2" / "summary.json").exists()

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        on_dask = run_sweep(
            tiny(),  # type: ignore[arg-type]
            GRID,
            SEEDS,
            tmp_path / "dask",
            scheduler=client,
            plots=False,
        )
    assert on_dask == local
    assert (tmp_path / "local" / "sweep.csv").read_bytes() == (
        tmp_path / "dask" / "sweep.csv"
    ).read_bytes()
