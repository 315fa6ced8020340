"""The `simulate` and `sweep` commands: research runs on the simulator.

Defined here, in the simulator's package, so that both entries mount the
same commands while the simulator does not depend on the CLI: `gossipmesh
simulate|sweep` (gossipmesh.cli.main, through gossipmesh.cli.simulate) and
`python -m gossipmesh.simulations simulate|sweep` (__main__.py). The layers
contract in pyproject.toml keeps gossipmesh.simulations from importing
gossipmesh.cli.

SCENARIO is a TOML file or the name of a bundled example (`small`,
`medium`, `mass-restart`, `partition`). Outputs go to --out DIR; see
docs/simulations.md for what each file holds.
"""

from __future__ import annotations

import functools
import resource
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import click

from gossipmesh.errors import GossipmeshError
from gossipmesh.simulations.scenario import Scenario, ScenarioError, load_scenario, with_overrides

__all__ = ["bundled_scenarios", "resolve_scenario", "simulate", "sweep"]

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(command: F) -> F:
    """One line and an exit status for a user error, also outside the main group."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GossipmeshError as exc:
            click.echo(f"gossipmesh: error: {exc}", err=True)
            raise SystemExit(exc.exit_status) from None

    return wrapper  # type: ignore[return-value]


def bundled_scenarios() -> dict[str, Path]:
    """The example scenarios shipped in gossipmesh.simulations/scenarios/."""
    folder = resources.files("gossipmesh.simulations") / "scenarios"
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            found[entry.name.removesuffix(".toml")] = Path(str(entry))
    return dict(sorted(found.items()))


def resolve_scenario(name_or_path: str) -> Scenario:
    """Load a scenario file, or a bundled one by name."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".toml":
        return load_scenario(path)
    bundled = bundled_scenarios()
    if name_or_path in bundled:
        return load_scenario(bundled[name_or_path])
    names = ", ".join(bundled) or "none"
    raise ScenarioError(f"{name_or_path}: no such file or bundled scenario (bundled: {names})")


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    from gossipmesh.simulations.sweep import parse_grid_option

    grid = parse_grid_option(values)
    for key, choices in grid.items():
        if len(choices) != 1:
            raise ScenarioError(f"--set {key}: give one value (sweep takes several)")
    return {key: choices[0] for key, choices in grid.items()}


def _peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@click.command()
@click.argument("scenario_name", metavar="SCENARIO")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for summary.json, CSVs and plots.",
)
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override a key.")
@click.option("--no-plots", is_flag=True, help="Skip the matplotlib figures.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_reports_errors
def simulate(
    scenario_name: str,
    out_dir: Path,
    seed: int | None,
    settings: tuple[str, ...],
    no_plots: bool,
    quiet: bool,
) -> None:
    """Run SCENARIO (a TOML file or a bundled name) on the simulator.

    The nodes run the real protocol code on a virtual clock; the same
    scenario and seed give byte-identical outputs.
    """
    from gossipmesh.simulations.runner import Simulation, write_outputs

    scenario = resolve_scenario(scenario_name)
    overrides = _parse_sets(settings)
    if seed is not None:
        overrides["seed"] = seed
    if overrides:
        scenario = with_overrides(scenario, overrides)
    simulation = Simulation(scenario)
    wall = time.perf_counter()
    if quiet:
        result = simulation.run()
    else:
        steps = 1000
        with click.progressbar(
            length=steps, label=f"{scenario.name}: {scenario.nodes} nodes", show_eta=True
        ) as bar:
            done = 0

            def advance(now: float, duration: float) -> None:
                nonlocal done
                target = int(steps * now / duration)
                bar.update(target - done)
                done = target

            result = simulation.run(advance)
    wall = time.perf_counter() - wall
    write_outputs(result, out_dir, plots=not no_plots)
    summary = result.summary
    dht = summary.get("dht", {})
    traffic = summary.get("traffic", {})
    click.echo(f"wrote {out_dir}/")
    click.echo(
        f"virtual {scenario.duration:g}s in {wall:.1f}s wall, "
        f"{result.loop_events / max(wall, 1e-9):,.0f} events/s, "
        f"peak memory {_peak_memory_mb():,.0f} MB"
    )
    click.echo(
        f"lookups {dht.get('lookups', 0)}: success {dht.get('lookup_success_rate', 0):.3f}, "
        f"hops mean {dht.get('hops_mean', float('nan')):.2f}; "
        f"control {traffic.get('bytes_per_node_s', 0):,.0f} B/node/s; "
        f"converged at {summary.get('time_to_convergence')}"
    )


@click.command()
@click.argument("scenario_name", metavar="SCENARIO")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for runs/, sweep.csv and the plots.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="A grid axis, e.g. nodes.count=50,200,800 (repeatable).",
)
@click.option("--seeds", default="1", show_default=True, help="Seeds: 1,2,3 or 1-5.")
@click.option("--workers", type=int, help="Local worker processes (default: one per core).")
@click.option("--scheduler", help="Dask scheduler address (tcp://host:8786) instead of local.")
@click.option("--no-plots", is_flag=True, help="Skip the matplotlib figures.")
@_reports_errors
def sweep(
    scenario_name: str,
    out_dir: Path,
    params: tuple[str, ...],
    seeds: str,
    workers: int | None,
    scheduler: str | None,
    no_plots: bool,
) -> None:
    """Run SCENARIO over a parameter grid and seeds, in parallel.

    Local cores by default; a Dask cluster with --scheduler.
    """
    from gossipmesh.simulations.sweep import expand_grid, parse_grid_option, parse_seeds, run_sweep

    scenario = resolve_scenario(scenario_name)
    grid = parse_grid_option(params)
    seed_list = parse_seeds(seeds)
    total = len(expand_grid(grid, seed_list))
    wall = time.perf_counter()
    with click.progressbar(length=total, label=f"{total} runs") as bar:
        rows = run_sweep(
            scenario,
            grid,
            seed_list,
            out_dir,
            workers=workers,
            scheduler=scheduler,
            plots=not no_plots,
            progress=lambda done, _total: bar.update(1),
        )
    click.echo(f"wrote {out_dir}/sweep.csv ({len(rows)} runs, {time.perf_counter() - wall:.1f}s)")
