"""Options every daemon-facing command shares: which instance to talk to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gossipmesh.config import DEFAULT_INTERFACE
from gossipmesh.statefiles import StateDir, default_state_dir

F = TypeVar("F", bound=Callable[..., Any])


def instance_options(function: F) -> F:
    """--interface and --state-dir: pick the daemon, as `up` was given them."""
    function = click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The instance's state directory [default: /var/lib/gossipmesh/INTERFACE].",
    )(function)
    function = click.option(
        "--interface",
        "-i",
        default=DEFAULT_INTERFACE,
        show_default=True,
        help="The TUN interface of the daemon to talk to.",
    )(function)
    return function


def state_dir_for(interface: str, state_dir: Path | None) -> StateDir:
    return StateDir(state_dir if state_dir is not None else default_state_dir(interface))
