"""`gossipmesh simulate` and `gossipmesh sweep`: research runs on the simulator.

The commands live in gossipmesh.simulations.commands, which
`python -m gossipmesh.simulations` mounts too; the main CLI mounts them from
here. The simulator must not import the CLI (the layers contract in
pyproject.toml), so the shared code sits on the simulator's side.
"""

from __future__ import annotations

from gossipmesh.simulations.commands import bundled_scenarios, resolve_scenario, simulate, sweep

__all__ = ["bundled_scenarios", "resolve_scenario", "simulate", "sweep"]
