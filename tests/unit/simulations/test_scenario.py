"""Scenario files: validation names the file and the key; overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossipmesh.cli.simulate import bundled_scenarios
from gossipmesh.simulations.scenario import ScenarioError, load_scenario, with_overrides


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("duration = 10\n[nodes]\ncount = 5\ncolour = 1\n", "nodes.colour: is not a known key"),
        ("duration = 10\n[nodes]\ncount = 'five'\n", "nodes.count: must be an integer"),
        ("duration = 10\n[nodes]\n", "nodes.count: is required"),
        ("duration = 10\n[nodes]\ncount = 5\n[network]\nloss = 1.5\n", "network.loss"),
        (
            "duration = 10\n[nodes]\ncount = 5\n[[events]]\nat = 20\nkind = 'heal'\n",
            "events[0].at: 20.0 is after duration",
        ),
        (
            "duration = 10\n[nodes]\ncount = 5\n[[events]]\nat = 1\nkind = 'explode'\n",
            "events[0].kind: 'explode' is not one of",
        ),
        ("duration = 10\n[nodes]\ncount = 5\n[topology]\nkind = 'ring'\n", "topology.kind"),
        (
            "duration = 10\n[nodes]\ncount = 5\n[[events]]\nat = 1\nkind = 'crash'\n",
            "events[0].count: a crash needs",
        ),
        ("duration = 10\n[nodes]\ncount = 5\n[workload]\nalpah = 3\n", "workload.alpah"),
        ("seed = true\nduration = 10\n[nodes]\ncount = 5\n", "seed: must be an integer"),
        ("duration = [\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        scenario = load_scenario(path)
        # Workload keys are checked when the run is built.
        from gossipmesh.simulations.runner import Simulation

        Simulation(scenario)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_overrides_replace_dotted_keys(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "duration = 10\n[nodes]\ncount = 5\n"))
    changed = with_overrides(scenario, {"nodes.count": 9, "seed": 4, "network.loss": 0.1})
    assert (changed.nodes, changed.seed, changed.loss) == (9, 4, 0.1)
    assert scenario.nodes == 5
    with pytest.raises(ScenarioError, match=r"nodes\.count"):
        with_overrides(scenario, {"nodes.count": "many"})


def test_joiners_extend_the_host_count(tmp_path: Path) -> None:
    scenario = load_scenario(
        write(
            tmp_path,
            "duration = 10\n[nodes]\ncount = 5\n[[events]]\nat = 5\nkind = 'join'\ncount = 3\n",
        )
    )
    assert (scenario.nodes, scenario.joiners, scenario.hosts) == (5, 3, 8)


def test_bundled_examples_load() -> None:
    bundled = bundled_scenarios()
    assert {"small", "medium", "mass-restart", "partition"} <= set(bundled)
    for path in bundled.values():
        load_scenario(path)


def test_bundled_mesh_scenarios_have_valid_workload_keys() -> None:
    from gossipmesh.simulations.mesh_workload import MeshParams

    scale = {name: load_scenario(path) for name, path in bundled_scenarios().items()}
    for scenario in scale.values():
        if scenario.workload == "mesh":
            MeshParams.from_table(scenario.workload_params, scenario.source)
    assert MeshParams.from_table(scale["mesh-1000"].workload_params, "x").dht == "oracle"
    assert scale["mesh-1000"].nodes == 1000 and scale["mesh-5000"].nodes == 5000
    with pytest.raises(ScenarioError, match=r"workload\.dht"):
        MeshParams.from_table({"dht": "magic"}, "x")
