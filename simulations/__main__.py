"""`python -m gossipmesh.simulations simulate|sweep ...`, before (or besides) the main CLI."""

from __future__ import annotations

import click

from gossipmesh.simulations.commands import simulate, sweep


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The gossipmesh simulator: real protocol code on virtual time."""


main.add_command(simulate)
main.add_command(sweep)

if __name__ == "__main__":
    main()
