"""Figures a researcher would put in a paper (matplotlib, Agg backend).

Per run: convergence over time (records placed, lookup success, routing
coverage, with events marked) and control overhead over time. Per sweep:
overhead vs N and lookup hops vs N with the log2(N) reference line. A
stretch CDF is drawn when a run has a `stretch` table (the full node's
routing metrics add one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from gossipmesh.simulations.scenario import Scenario

__all__ = ["RunResult", "plot_hops_vs_n", "plot_overhead_vs_n", "plot_run", "plot_stretch_cdf"]


class RunResult(Protocol):
    """What `plot_run` reads of a run; runner.SimulationResult is one.

    A Protocol rather than SimulationResult itself: runner imports this module
    to draw, so importing runner back (even for type checking) would be an
    import cycle (tests/unit/test_layout.py).
    """

    @property
    def scenario(self) -> Scenario: ...

    @property
    def timeseries(self) -> Sequence[Mapping[str, float]]: ...

    @property
    def tables(self) -> Mapping[str, Sequence[Mapping[str, Any]]]: ...

    @property
    def event_log(self) -> Sequence[Mapping[str, Any]]: ...


# Fixed metadata: the same data gives the same PNG bytes.
_PNG_METADATA = {"Software": None}


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=150, metadata=_PNG_METADATA)
    plt.close(figure)
    return path


def _column(rows: Sequence[Mapping[str, float]], name: str) -> list[float]:
    return [float(row.get(name, math.nan)) for row in rows]


def _mark_events(axes: Any, events: Sequence[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for event in events:
        label = event["kind"] if event["kind"] not in seen else None
        seen.add(event["kind"])
        axes.axvline(event["at"], color="grey", linestyle=":", linewidth=1)
        if label:
            axes.annotate(
                label,
                (event["at"], 0.03),
                xycoords=("data", "axes fraction"),
                xytext=(2, 0),
                textcoords="offset points",
                fontsize=7,
                rotation=90,
                va="bottom",
                color="dimgrey",
            )


def plot_run(result: RunResult, out_dir: Path) -> list[Path]:
    """convergence.png and overhead.png for one run (plus stretch_cdf.png if known)."""
    rows = result.timeseries
    times = _column(rows, "time")
    written = []
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    for column, label in (
        ("records_placed", "records placed at the k closest"),
        ("lookup_success", "lookups returning the current record"),
        ("routing_coverage", "k closest known (routing coverage)"),
        ("records_known", "node records known (pairs)"),
        ("routes_optimal", "routes optimal over formed links"),
        ("probe_delivery", "data probes delivered"),
    ):
        if rows and column in rows[0]:
            axes.plot(times, _column(rows, column), label=label, linewidth=1.2)
    _mark_events(axes, result.event_log)
    axes.set_xlabel("virtual time (s)")
    axes.set_ylabel("fraction")
    axes.set_ylim(-0.02, 1.05)
    axes.set_title(f"Convergence — {result.scenario.name}, N={result.scenario.nodes}", fontsize=9)
    axes.legend(fontsize=7, loc="lower right")
    axes.grid(alpha=0.3)
    written.append(_save(figure, out_dir / "convergence.png"))

    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    (traffic_line,) = axes.plot(
        times, _column(rows, "bytes_per_node_s"), label="bytes / node / s", linewidth=1.2
    )
    axes.set_xlabel("virtual time (s)")
    axes.set_ylabel("control bytes per node per second")
    twin = axes.twinx()
    (live_line,) = twin.plot(
        times,
        _column(rows, "live_nodes"),
        color="tab:green",
        linestyle="--",
        linewidth=1,
        label="live nodes",
    )
    twin.set_ylabel("live nodes")
    twin.set_ylim(bottom=0)
    _mark_events(axes, result.event_log)
    axes.set_title(f"Control overhead — {result.scenario.name}", fontsize=9)
    axes.legend(handles=[traffic_line, live_line], fontsize=7, loc="upper right")
    axes.grid(alpha=0.3)
    written.append(_save(figure, out_dir / "overhead.png"))

    stretch = result.tables.get("stretch")
    if stretch:
        written.append(plot_stretch_cdf([float(r["stretch"]) for r in stretch], out_dir))
    return written


def plot_stretch_cdf(stretches: Sequence[float], out_dir: Path) -> Path:
    """CDF of route stretch (overlay path latency / underlay shortest path)."""
    ordered = sorted(stretches)
    figure, axes = plt.subplots(figsize=(4.8, 3.6))
    fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
    axes.step(ordered, fractions, where="post")
    axes.set_xlabel("route stretch")
    axes.set_ylabel("CDF")
    axes.grid(alpha=0.3)
    return _save(figure, out_dir / "stretch_cdf.png")


def _by_n(
    rows: Sequence[Mapping[str, Any]], column: str
) -> tuple[list[int], list[float], list[float]]:
    """Mean and standard deviation of `column` per node count."""
    groups: dict[int, list[float]] = {}
    for row in rows:
        value = row.get(column)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            groups.setdefault(int(row["nodes"]), []).append(float(value))
    sizes = sorted(groups)
    means = [sum(groups[n]) / len(groups[n]) for n in sizes]
    spreads = []
    for n, m in zip(sizes, means, strict=True):
        values = groups[n]
        spreads.append(math.sqrt(sum((v - m) ** 2 for v in values) / len(values)))
    return sizes, means, spreads


def _n_axis(axes: Any, sizes: Sequence[int]) -> None:
    """A log N axis labelled with the measured sizes, not 3x10^2."""
    axes.set_xscale("log")
    axes.set_xticks(list(sizes), labels=[str(n) for n in sizes])
    axes.minorticks_off()
    axes.set_xlabel("nodes N")


def plot_hops_vs_n(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> Path:
    """Mean lookup hops per N (error bars over seeds) against log2(N)."""
    sizes, means, spreads = _by_n(rows, "hops_mean")
    figure, axes = plt.subplots(figsize=(4.8, 3.6))
    axes.errorbar(sizes, means, yerr=spreads, marker="o", capsize=3, label="measured (rounds)")
    if sizes:
        grid = [sizes[0] * (sizes[-1] / sizes[0]) ** (i / 50) for i in range(51)]
        axes.plot(grid, [math.log2(n) for n in grid], "k--", linewidth=1, label="log2(N)")
    _n_axis(axes, sizes)
    axes.set_ylabel("lookup hops")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, which="both")
    return _save(figure, out_dir / "hops_vs_n.png")


def plot_overhead_vs_n(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> Path:
    """Control bytes per node per second against N (error bars over seeds)."""
    sizes, means, spreads = _by_n(rows, "bytes_per_node_s")
    figure, axes = plt.subplots(figsize=(4.8, 3.6))
    axes.errorbar(sizes, means, yerr=spreads, marker="o", capsize=3)
    _n_axis(axes, sizes)
    axes.set_ylabel("control bytes per node per second")
    axes.grid(alpha=0.3, which="both")
    return _save(figure, out_dir / "overhead_vs_n.png")
