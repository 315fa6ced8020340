"""Scenarios: a simulation run described as data (a TOML file).

A scenario names the nodes, the underlay topology, the network model, the
workload the nodes run, the churn and the events, the duration and the
seed. `load_scenario` validates every key and reports errors as
`ScenarioError` naming the file and the key. `with_overrides` applies the
dotted-key settings a sweep varies (`nodes.count=200`).
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmesh.errors import ConfigError
from gossipmesh.simulations.topology import TOPOLOGY_KINDS

__all__ = [
    "EVENT_KINDS",
    "ChurnSpec",
    "EventSpec",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
    "with_overrides",
]

EVENT_KINDS = ("partition", "heal", "crash", "restart", "join", "mass_restart")
WORKLOAD_KINDS = ("kademlia", "discovery", "mesh")


class ScenarioError(ConfigError):
    """A scenario file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class EventSpec:
    """Something that happens to the network or the nodes at virtual time `at`.

    Nodes are chosen by `nodes` (host indexes), `count` or `fraction`
    (drawn with the scenario's seed); `groups` lists a partition's sides.
    """

    at: float
    kind: str
    nodes: tuple[int, ...] = ()
    count: int | None = None
    fraction: float | None = None
    groups: tuple[tuple[int, ...], ...] = ()
    downtime: float = 0.0


@dataclass(frozen=True)
class ChurnSpec:
    """Independent crash/restart cycles: each node crashes as a Poisson process."""

    crash_rate_per_hour: float
    mean_downtime: float = 60.0
    start: float = 0.0
    end: float | None = None
    protect_bootstrap: bool = True


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a run; same scenario and seed, same outputs."""

    name: str
    seed: int
    duration: float
    nodes: int
    start_spread: float = 10.0
    bootstrap_nodes: int = 3
    topology: str = "random_geometric"
    topology_params: Mapping[str, Any] = field(default_factory=dict)
    jitter: float = 0.0
    loss: float = 0.0
    uplink_kbps: float | None = None
    workload: str = "kademlia"
    workload_params: Mapping[str, Any] = field(default_factory=dict)
    metrics_interval: float = 5.0
    churn: ChurnSpec | None = None
    events: tuple[EventSpec, ...] = ()
    source: str = "<scenario>"
    base_dir: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def joiners(self) -> int:
        """Hosts that join later (`join` events), beyond the initial nodes."""
        return sum(e.count or len(e.nodes) for e in self.events if e.kind == "join")

    @property
    def hosts(self) -> int:
        return self.nodes + self.joiners


class _Reader:
    """Typed access to one TOML table that names the file and key on error."""

    def __init__(self, table: Mapping[str, Any], prefix: str, source: str) -> None:
        self.table = table
        self.prefix = prefix
        self.source = source
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {self.prefix}{key}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.error(key, "is required")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {_kind_names(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {_kind_names(kinds)}, got {value!r}")
        return float(value) if float in kinds and isinstance(value, int) else value

    def number(self, key: str, default: Any = ..., *, minimum: float = 0.0) -> Any:
        value = self.get(key, (int, float), default)
        if value is not None and value is not default and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def integer(self, key: str, default: Any = ..., *, minimum: int = 0) -> Any:
        value = self.get(key, int, default)
        if value is not None and value is not default and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def table_at(self, key: str) -> _Reader:
        value = self.get(key, dict, {})
        return _Reader(value, f"{self.prefix}{key}.", self.source)

    def reject_unknown(self, allowed_extra: Sequence[str] = ()) -> None:
        for key in self.table:
            if key not in self.used and key not in allowed_extra:
                raise self.error(key, "is not a known key")


def _kind_names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    names |= {dict: "a table", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _node_list(reader: _Reader, key: str, limit: int) -> tuple[int, ...]:
    values = reader.get(key, list, [])
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            raise reader.error(key, f"host indexes must be integers in 0..{limit - 1}")
    return tuple(values)


def _event(reader: _Reader, hosts: int) -> EventSpec:
    kind = reader.get("kind", str)
    if kind not in EVENT_KINDS:
        raise reader.error("kind", f"{kind!r} is not one of {', '.join(EVENT_KINDS)}")
    groups: list[tuple[int, ...]] = []
    for number, group in enumerate(reader.get("groups", list, [])):
        if not isinstance(group, list):
            raise reader.error("groups", "must be a list of lists of host indexes")
        group_reader = _Reader({"group": group}, f"{reader.prefix}groups[{number}].", reader.source)
        groups.append(_node_list(group_reader, "group", hosts))
    fraction = reader.number("fraction", None)
    if fraction is not None and not 0 < fraction <= 1:
        raise reader.error("fraction", "must be in (0, 1]")
    event = EventSpec(
        at=reader.number("at"),
        kind=kind,
        nodes=_node_list(reader, "nodes", hosts),
        count=reader.integer("count", None, minimum=1),
        fraction=fraction,
        groups=tuple(groups),
        downtime=reader.number("downtime", 0.0),
    )
    if kind == "join" and not (event.count or event.nodes):
        raise reader.error("count", "a join event needs count = N")
    if kind == "join" and event.nodes:
        raise reader.error("nodes", "joiners are new hosts: give count = N instead")
    if kind == "crash" and not (event.nodes or event.count or event.fraction):
        raise reader.error("count", "a crash needs nodes = [...], count = N or fraction = F")
    if kind == "partition" and not (event.groups or event.fraction):
        raise reader.error("groups", "a partition needs groups = [[...], [...]] or fraction")
    reader.reject_unknown()
    return event


def parse_scenario(data: Mapping[str, Any], source: str, base_dir: Path | None = None) -> Scenario:
    """Validate a scenario table (as parsed from TOML) into a `Scenario`."""
    top = _Reader(data, "", source)
    nodes = top.table_at("nodes")
    count = nodes.integer("count", minimum=1)
    bootstrap = nodes.integer("bootstrap", 3, minimum=1)
    start_spread = nodes.number("start_spread", 10.0)
    nodes.reject_unknown()

    topology = top.table_at("topology")
    kind = topology.get("kind", str, "random_geometric")
    if kind not in TOPOLOGY_KINDS:
        raise topology.error("kind", f"{kind!r} is not one of {', '.join(TOPOLOGY_KINDS)}")
    topology_params = {k: v for k, v in topology.table.items() if k != "kind"}

    network = top.table_at("network")
    jitter = network.number("jitter_ms", 0.0) / 1000.0
    loss = network.number("loss", 0.0)
    if loss >= 1:
        raise network.error("loss", "must be below 1")
    uplink = network.number("uplink_kbps", None)
    network.reject_unknown()

    workload = top.table_at("workload")
    workload_kind = workload.get("kind", str, "kademlia")
    if workload_kind not in WORKLOAD_KINDS:
        raise workload.error("kind", f"{workload_kind!r} is not one of {WORKLOAD_KINDS}")
    workload_params = {k: v for k, v in workload.table.items() if k != "kind"}

    metrics = top.table_at("metrics")
    interval = metrics.number("interval", 5.0)
    if interval <= 0:
        raise metrics.error("interval", "must be > 0")
    metrics.reject_unknown()

    churn: ChurnSpec | None = None
    if "churn" in data:
        churn_reader = top.table_at("churn")
        churn = ChurnSpec(
            crash_rate_per_hour=churn_reader.number("crash_rate_per_hour"),
            mean_downtime=churn_reader.number("mean_downtime", 60.0),
            start=churn_reader.number("start", 0.0),
            end=churn_reader.number("end", None),
            protect_bootstrap=churn_reader.get("protect_bootstrap", bool, True),
        )
        churn_reader.reject_unknown()

    raw_events = top.get("events", list, [])
    join_total = sum(
        int(e.get("count", 0))
        for e in raw_events
        if isinstance(e, dict) and e.get("kind") == "join"
    )
    hosts = count + join_total
    events = []
    for number, raw_event in enumerate(raw_events):
        if not isinstance(raw_event, dict):
            raise top.error(f"events[{number}]", "must be a table ([[events]])")
        events.append(_event(_Reader(raw_event, f"events[{number}].", source), hosts))

    duration = top.number("duration")
    if duration <= 0:
        raise top.error("duration", "must be > 0")
    for number, event in enumerate(events):
        if event.at > duration:
            raise top.error(f"events[{number}].at", f"{event.at} is after duration {duration}")
    scenario = Scenario(
        name=top.get("name", str, Path(source).stem),
        seed=top.integer("seed", 1),
        duration=duration,
        nodes=count,
        start_spread=start_spread,
        bootstrap_nodes=min(bootstrap, count),
        topology=kind,
        topology_params=topology_params,
        jitter=jitter,
        loss=loss,
        uplink_kbps=uplink,
        workload=workload_kind,
        workload_params=workload_params,
        metrics_interval=interval,
        churn=churn,
        events=tuple(sorted(events, key=lambda e: e.at)),
        source=source,
        base_dir=base_dir,
        raw=copy.deepcopy(dict(data)),
    )
    top.reject_unknown()
    return scenario


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(path), path.parent)


def with_overrides(scenario: Scenario, overrides: Mapping[str, Any]) -> Scenario:
    """The same scenario with dotted keys replaced (`nodes.count`, `seed`, ...)."""
    data = copy.deepcopy(dict(scenario.raw))
    for dotted, value in overrides.items():
        table = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            nested = table.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ScenarioError(f"{scenario.source}: {dotted}: {part} is not a table")
            table = nested
        table[parts[-1]] = value
    label = ", ".join(f"{k}={v}" for k, v in overrides.items())
    source = f"{scenario.source} [{label}]" if label else scenario.source
    parsed = parse_scenario(data, source, scenario.base_dir)
    return dataclasses.replace(parsed, name=scenario.name)
