"""`simulate` and `sweep` as a researcher calls them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gossipmesh.cli.simulate import simulate, sweep


def test_simulate_a_bundled_scenario(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        simulate,
        ["small", "--out", str(out), "--set", "nodes.count=12", "--set", "duration=40"],
    )
    assert result.exit_code == 0, result.output
    assert "events/s" in result.output and "peak memory" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nodes"] == 12 and summary["duration"] == 40.0
    assert (out / "convergence.png").stat().st_size > 10_000


def test_a_bad_scenario_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("duration = 10\n[nodes]\ncount = -1\n")
    result = CliRunner().invoke(simulate, [str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"gossipmesh: error: {bad}: nodes.count: must be >= 1" in result.output
    assert "Traceback" not in result.output


def test_unknown_scenario_name_lists_the_bundled_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(simulate, ["nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "mass-restart" in result.output


def test_sweep_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        sweep,
        [
            "small",
            "--out",
            str(tmp_path),
            "--param",
            "nodes.count=6,9",
            "--param",
            "duration=20",
            "--seeds",
            "1",
            "--workers",
            "2",
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("run,seed,nodes.count,duration,nodes")
