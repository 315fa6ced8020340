"""Plain-text tables for human output; `--json` prints the data itself."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def echo_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print rows as aligned columns; `columns` is (key, heading) pairs."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[heading.upper() for _, heading in columns]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else str(row.get(key)) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def echo_fields(fields: Mapping[str, Any]) -> None:
    """Print key/value pairs, one per line, keys aligned."""
    width = max((len(key) for key in fields), default=0)
    for key, value in fields.items():
        click.echo(f"{key.replace('_', ' '):<{width}}  {value}")
