"""Sweeps: one scenario over a parameter grid and several seeds, in parallel.

Runs go to local cores through `concurrent.futures.ProcessPoolExecutor`, or
to a Dask cluster (`dask.distributed.Client`) when given a scheduler
address or a client. Workers only compute: they return each run's result
and this process writes every file, so workers need no shared disk. The
rows of sweep.csv come in grid order, whatever order runs finish in.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import multiprocessing
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossipmesh.simulations.metrics import write_csv
from gossipmesh.simulations.runner import Simulation, SimulationResult, write_outputs
from gossipmesh.simulations.scenario import Scenario, ScenarioError, with_overrides

__all__ = [
    "SweepPoint",
    "expand_grid",
    "parse_grid_option",
    "parse_seeds",
    "run_point",
    "run_sweep",
    "summary_row",
]

SweepProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: the overridden settings and the seed."""

    overrides: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def run_id(self) -> str:
        parts = [f"{key}-{value}" for key, value in self.overrides] + [f"seed-{self.seed}"]
        return re.sub(r"[^A-Za-z0-9_.=-]", "_", "_".join(parts))


def expand_grid(grid: Mapping[str, Sequence[Any]], seeds: Sequence[int]) -> list[SweepPoint]:
    """Every combination of the grid's values, for every seed (grid order)."""
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        for seed in seeds:
            points.append(SweepPoint(tuple(zip(keys, values, strict=True)), seed))
    return points


def parse_seeds(text: str) -> list[int]:
    """`1,2,5` or `1-10` (or a mix) -> the seeds, in order."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            if dash:
                seeds.extend(range(int(low), int(high) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ScenarioError(f"--seeds: {part!r} is not N or N-M") from None
    if not seeds:
        raise ScenarioError("--seeds: give at least one seed")
    return seeds


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_grid_option(options: Sequence[str]) -> dict[str, list[Any]]:
    """`nodes.count=50,200,800` (repeatable) -> {"nodes.count": [50, 200, 800]}."""
    grid: dict[str, list[Any]] = {}
    for option in options:
        key, sep, values = option.partition("=")
        if not sep or not key or not values:
            raise ScenarioError(f"--param {option!r}: write KEY=VALUE[,VALUE...]")
        grid[key.strip()] = [_toml_value(v.strip()) for v in values.split(",")]
    return grid


def run_point(scenario: Scenario, point: SweepPoint) -> SimulationResult:
    """Run one point of a sweep (in a worker process or on a Dask worker)."""
    overrides = dict(point.overrides)
    overrides["seed"] = point.seed
    return Simulation(with_overrides(scenario, overrides)).run()


def summary_row(point: SweepPoint, result: SimulationResult) -> dict[str, Any]:
    """The figures of one run that sweep.csv and the sweep plots use."""
    summary = result.summary
    traffic = summary.get("traffic", {})
    dht = summary.get("dht", {})
    row: dict[str, Any] = {"run": point.run_id, "seed": point.seed}
    row.update(dict(point.overrides))
    row.update(
        {
            "nodes": summary["nodes"],
            "bytes_per_node_s": traffic.get("bytes_per_node_s"),
            "messages_per_node_s": traffic.get("messages_per_node_s"),
            "peak_bytes_per_node_s": traffic.get("peak_bytes_per_node_s"),
            "hops_mean": dht.get("hops_mean"),
            "hops_p95": dht.get("hops_p95"),
            "queries_mean": dht.get("queries_mean"),
            "lookup_success_rate": dht.get("lookup_success_rate"),
            "time_all_records_placed": dht.get("time_all_records_placed"),
            "time_to_convergence": summary.get("time_to_convergence"),
            "loop_events": summary.get("loop_events"),
        }
    )
    mesh = summary.get("mesh")
    if mesh is not None:  # the full node's figures, only for mesh runs
        row.update(
            {
                "time_all_records_known": mesh.get("time_all_records_known"),
                "time_all_routes_optimal": mesh.get("time_all_routes_optimal"),
                "stretch_median": mesh.get("stretch_median"),
                "stretch_p95": mesh.get("stretch_p95"),
                "delivery_ratio": summary.get("probes", {}).get("delivery_ratio"),
            }
        )
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def run_sweep(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    out_dir: Path | None = None,
    *,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    plots: bool = True,
    progress: SweepProgress | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point and seed; write runs/<id>/, sweep.csv and plots.

    `scheduler` is a Dask scheduler address (`tcp://host:8786`) or a
    `dask.distributed.Client`; without it, `workers` local processes run.
    """
    points = expand_grid(grid, seeds)
    results: dict[int, SimulationResult] = {}

    def finished(index: int, result: SimulationResult) -> None:
        results[index] = result
        if out_dir is not None:
            write_outputs(result, out_dir / "runs" / points[index].run_id, plots=plots)
        if progress is not None:
            progress(len(results), len(points))

    if scheduler is not None:
        _run_on_dask(scheduler, scenario, points, finished)
    else:
        # Not fork: the parent may hold threads (Dask, a progress bar).
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(run_point, scenario, p): i for i, p in enumerate(points)}
            for future in concurrent.futures.as_completed(futures):
                finished(futures[future], future.result())
    rows = [summary_row(points[i], results[i]) for i in range(len(points))]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(out_dir / "sweep.csv", rows)
        if plots:
            from gossipmesh.simulations.plots import plot_hops_vs_n, plot_overhead_vs_n

            plot_hops_vs_n(rows, out_dir)
            plot_overhead_vs_n(rows, out_dir)
    return rows


def _run_on_dask(
    scheduler: str | Any,
    scenario: Scenario,
    points: list[SweepPoint],
    finished: Callable[[int, SimulationResult], None],
) -> None:
    from dask.distributed import Client, as_completed

    client = Client(scheduler) if isinstance(scheduler, str) else scheduler  # type: ignore[no-untyped-call]
    try:
        futures = [client.submit(run_point, scenario, p, pure=False) for p in points]
        index = {future.key: i for i, future in enumerate(futures)}
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            finished(index[future.key], future.result())
    finally:
        if isinstance(scheduler, str):
            client.close()
