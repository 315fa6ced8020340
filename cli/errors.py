"""Turning errors into one line and an exit status, never a traceback."""

from __future__ import annotations

from typing import Any

import click

from gossipmesh.errors import GossipmeshError


class ErrorReportingGroup(click.Group):
    """A click group that reports `GossipmeshError` as `gossipmesh: error: ...`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GossipmeshError as exc:
            click.echo(f"gossipmesh: error: {exc}", err=True)
            ctx.exit(exc.exit_status)
