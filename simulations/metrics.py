"""Pluggable metric collection and the files a run writes.

A `MetricCollector` is sampled every `metrics.interval` virtual seconds and
contributes columns to `timeseries.csv`, entries to `summary.json` and,
if it wants, whole tables (`<name>.csv`). Workloads bring their own
collectors (the kademlia workload: lookups and record placement); the full
gossipmesh node adds routing convergence, stretch and probe delivery the
same way. Collectors only read state: measuring must not change the run.

A sample may carry a `converged` column (1.0 or 0.0). The run's sample is
converged when every collector that reports one says so; reconvergence
after each event is the time from the event to the first converged sample
after it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from gossipmesh.simulations.network import SimNetwork

__all__ = [
    "MetricCollector",
    "TrafficMetrics",
    "mean",
    "percentile",
    "write_csv",
    "write_json",
]


class MetricCollector(Protocol):
    """Something sampled during a run that contributes columns and a summary."""

    name: str

    def sample(self, now: float) -> dict[str, float]:
        """Values for the timeseries row at virtual time `now`."""
        ...

    def summary(self) -> dict[str, Any]:
        """Whole-run figures for summary.json (under the collector's name)."""
        ...

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Extra CSV tables by file stem (may be empty)."""
        ...


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


class TrafficMetrics:
    """Control traffic: bytes and datagrams sent per live node per second."""

    name = "traffic"

    def __init__(
        self,
        network: SimNetwork,
        live_count: Callable[[], int],
        node_seconds: Callable[[], float],
    ) -> None:
        self.network = network
        self.live_count = live_count
        self.node_seconds = node_seconds
        self._last_bytes = 0
        self._last_messages = 0
        self._last_node_seconds = 0.0
        self._node_seconds = 0.0
        self.peak_bytes_per_node_s = 0.0

    def sample(self, now: float) -> dict[str, float]:
        """Rates over the window since the last sample, per live-node-second."""
        total = self.network.total
        live = self.live_count()
        node_seconds_now = self.node_seconds()
        node_seconds = node_seconds_now - self._last_node_seconds
        sent_bytes = total.sent_bytes - self._last_bytes
        sent_messages = total.sent_messages - self._last_messages
        self._last_node_seconds = node_seconds_now
        self._last_bytes = total.sent_bytes
        self._last_messages = total.sent_messages
        self._node_seconds = node_seconds_now
        bytes_rate = sent_bytes / node_seconds if node_seconds else 0.0
        self.peak_bytes_per_node_s = max(self.peak_bytes_per_node_s, bytes_rate)
        return {
            "live_nodes": float(live),
            "bytes_per_node_s": bytes_rate,
            "messages_per_node_s": sent_messages / node_seconds if node_seconds else 0.0,
        }

    def summary(self) -> dict[str, Any]:
        total = self.network.total
        node_seconds = self._node_seconds
        return {
            "sent_bytes": total.sent_bytes,
            "sent_messages": total.sent_messages,
            "dropped_messages": sum(c.dropped_messages for c in self.network.counters.values()),
            "bytes_per_node_s": total.sent_bytes / node_seconds if node_seconds else 0.0,
            "messages_per_node_s": total.sent_messages / node_seconds if node_seconds else 0.0,
            "peak_bytes_per_node_s": self.peak_bytes_per_node_s,
        }

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        rows = []
        for host in sorted(self.network.counters):
            counters = self.network.counters[host]
            rows.append(
                {
                    "host": host,
                    "sent_messages": counters.sent_messages,
                    "sent_bytes": counters.sent_bytes,
                    "received_messages": counters.received_messages,
                    "received_bytes": counters.received_bytes,
                    "dropped_messages": counters.dropped_messages,
                }
            )
        return {"nodes": rows}


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON with sorted keys, so equal data gives equal bytes."""
    path.write_text(json.dumps(_clean(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as CSV; columns in first-seen order."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in columns})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else value
