"""gossipmesh's own Discovery runs on the simulator, unchanged and reproducibly."""

from __future__ import annotations

from gossipmesh.simulations.runner import Simulation

from .conftest import make_scenario


def discovery_scenario() -> object:
    return make_scenario(
        duration=90.0,
        nodes={"count": 30, "start_spread": 5.0},
        network={"jitter_ms": 3.0, "loss": 0.01},
        workload={"kind": "discovery", "lookup_interval": 5.0},
        metrics={"interval": 5.0},
        events=[{"at": 45.0, "kind": "crash", "count": 3, "downtime": 10.0}],
    )


def test_discovery_nodes_publish_and_find_each_other() -> None:
    result = Simulation(discovery_scenario()).run()  # type: ignore[arg-type]
    dht = result.summary["dht"]
    print(dht)
    assert dht["lookups"] > 300
    assert dht["lookup_success_rate"] > 0.95
    assert dht["time_all_records_placed"] is not None
    assert dht["remote_hops_mean"] >= 1.0
    assert result.summary["task_errors"] == 0
    last = result.timeseries[-1]
    assert last["records_placed"] == 1.0 and last["routing_coverage"] > 0.9


def test_discovery_runs_are_reproducible() -> None:
    first = Simulation(discovery_scenario()).run()  # type: ignore[arg-type]
    second = Simulation(discovery_scenario()).run()  # type: ignore[arg-type]
    assert first.summary == second.summary
    assert first.timeseries == second.timeseries
    assert first.tables == second.tables
