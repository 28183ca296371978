"""The `accord` command line (the contract is ../shared/CLI.md).

Exit codes: 0 success, 1 refused or failed (one line on stderr saying why and what to do),
2 usage error (typer's own).

Each command imports what it needs when it runs: the database layer, the key store and
the web stack are not loaded to print `--help` or to run a command that does not use
them (the eager imports made every `accord` invocation take about a second).
"""

from accord.gateway.cli._common import app

__all__ = ["app", "main"]


def main() -> None:
    app()


# Register every command group: the admin's (init, peer, user, demo), serve, the keys',
# the users' (send, sign, inbox, ...), the workflow's, the consent's and the auditors'.
from accord.gateway.cli import (  # noqa: E402, F401
    admin,
    audit,
    consent,
    keys,
    messages,
    node,
    workflow,
)
