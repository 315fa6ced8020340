"""Helpers for simulator tests: small scenarios built from tables."""

from __future__ import annotations

from typing import Any

from gossipmesh.simulations.scenario import Scenario, parse_scenario


def make_scenario(**sections: Any) -> Scenario:
    """A scenario from keyword tables, e.g. make_scenario(nodes={"count": 20})."""
    data: dict[str, Any] = {"name": "test", "seed": 7, "duration": 60.0}
    data.update(sections)
    return parse_scenario(data, "<test>")
