"""The `accord` command line (the contract is ../shared/CLI.md).

Exit codes: 0 success, 1 refused or failed (one line on stderr saying why and what to do),
2 usage error (typer's own).
"""

from __future__ import annotations

import typer

from . import _demo

app = typer.Typer(
    name="accord",
    help="Accord: a secure document exchange gateway for Parties to a cooperation agreement.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def demo() -> None:
    """Run the agreement's exchange end to end on this machine and print a transcript."""
    _demo.run()


@app.callback()
def _root() -> None:
    """Accord gateway node and tools."""


def main() -> None:
    app()
