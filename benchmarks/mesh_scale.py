"""Issue 16's figures: the mesh-1000 scenario at several sizes, one run at a time.

Prints, per N: wall and CPU time, peak RSS, time to full reachability, mean
and largest degree, route stretch (median, p95), control bytes/s per node
and data-probe delivery (overall and under churn); writes scale.csv and
overhead_vs_n.png (control bytes/s per node against N) into --out.

    python benchmarks/mesh_scale.py --out results/scale --sizes 50,200,1000
    python benchmarks/mesh_scale.py --out results/scale --sizes 50,200,1000 --reuse

Each size runs in its own process (`gossipmesh simulate`), so its peak RSS
is its own. With --reuse a size whose outputs are already in --out (say a
long run done offline, with its `run.txt`) is read, not run again.
Performance is reported, never asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FIELDS = [
    "nodes",
    "dht",
    "wall_s",
    "cpu_s",
    "peak_rss_mb",
    "time_all_routes_reachable",
    "mesh_degree",
    "mesh_degree_max_seen",
    "max_neighbours",
    "stretch_median",
    "stretch_p95",
    "bytes_per_node_s",
    "delivery_ratio",
    "delivery_ratio_churn",
]


def run_size(scenario: str, nodes: int, out: Path, extra: list[str]) -> dict[str, Any]:
    """Run one size in a child process; its wall, CPU and the RSS it printed, in run.txt."""
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "gossipmesh.simulations", "simulate", scenario,
        "--out", str(out), "--quiet", "--set", f"nodes.count={nodes}", *extra,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (out / "run.txt").write_text(f"wall_s {wall:.1f}\ncpu_s {cpu:.1f}\n{done.stdout}")
    return read_size(nodes, out)


def read_size(nodes: int, out: Path) -> dict[str, Any]:
    """The figures of one finished run from its output directory."""
    summary = json.loads((out / "summary.json").read_text())
    text = (out / "run.txt").read_text() if (out / "run.txt").exists() else ""
    found = dict(re.findall(r"^(wall_s|cpu_s) ([\d.]+)$", text, re.MULTILINE))
    rss = re.search(r"peak memory ([\d,]+) MB", text)
    mesh, probes, traffic = summary["mesh"], summary["probes"], summary["traffic"]
    return {
        "nodes": nodes,
        "dht": mesh.get("dht", "kademlia"),
        "wall_s": float(found["wall_s"]) if "wall_s" in found else None,
        "cpu_s": float(found["cpu_s"]) if "cpu_s" in found else None,
        "peak_rss_mb": int(rss.group(1).replace(",", "")) if rss else None,
        "time_all_routes_reachable": mesh.get("time_all_routes_reachable"),
        "mesh_degree": mesh["final"]["mesh_degree"],
        "mesh_degree_max_seen": mesh.get("mesh_degree_max_seen"),
        "max_neighbours": mesh.get("max_neighbours"),
        "stretch_median": mesh["stretch_median"],
        "stretch_p95": mesh["stretch_p95"],
        "bytes_per_node_s": traffic["bytes_per_node_s"],
        "delivery_ratio": probes["delivery_ratio"],
        "delivery_ratio_churn": probes.get("delivery_ratio_churn"),
    }


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenario", default="mesh-1000")
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--reuse", action="store_true", help="read sizes already in --out")
    parser.add_argument("--set", dest="settings", action="append", default=[])
    args = parser.parse_args()
    extra = [arg for setting in args.settings for arg in ("--set", setting)]
    rows = []
    for nodes in (int(n) for n in args.sizes.split(",")):
        out = args.out / f"n{nodes}"
        if args.reuse and (out / "summary.json").exists():
            row = read_size(nodes, out)
        else:
            row = run_size(args.scenario, nodes, out, extra)
        rows.append(row)
        print("  ".join(f"{name}={_show(row[name])}" for name in FIELDS), flush=True)
    with (args.out / "scale.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    from gossipmesh.simulations.plots import plot_overhead_vs_n

    print(f"wrote {args.out / 'scale.csv'} and {plot_overhead_vs_n(rows, args.out)}")


if __name__ == "__main__":
    main()
