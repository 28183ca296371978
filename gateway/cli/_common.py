"""What every `accord` command shares: the Typer app and its groups, the common options,
and how a command fails (exit 1 with one line on stderr), prints JSON and reads times.

The command modules (admin, node, keys, messages, workflow, consent, audit) import this
module and nothing of each other; `gateway.cli` imports them all to register their
commands. Nothing here loads the database layer, the key store or the web stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from accord.gateway.client.local import ClientError

if TYPE_CHECKING:
    from accord.gateway.node.config import Home

# The choices of `user add`, spelled here so that parsing the command line needs no
# database layer; tests/gateway/test_cli_admin.py checks they equal `storage.Role` and
# `_admin.CLEARANCES`.
CLEARANCES = ("OFFICIAL", "RESTRICTED", "CONFIDENTIAL")


class RoleChoice(StrEnum):
    OPERATOR = "operator"
    SIGNATORY = "signatory"
    ADMIN = "admin"
    AUDITOR = "auditor"


app = typer.Typer(
    name="accord",
    help="Accord: a secure document exchange gateway for Parties to a cooperation agreement.",
    no_args_is_help=True,
    add_completion=False,
)


# --- Admin: a node's home directory (CLI.md "Admin") -------------------------------------

HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="ACCORD_HOME",
        help="The node's home directory (or ACCORD_HOME).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")
]

peer_app = typer.Typer(
    name="peer", help="Exchange signed node descriptors with peers.", no_args_is_help=True
)
user_app = typer.Typer(name="user", help="Manage the node's local users.", no_args_is_help=True)
keys_app = typer.Typer(name="keys", help="The node's keys and their history.", no_args_is_help=True)
app.add_typer(peer_app, name="peer")
app.add_typer(user_app, name="user")
app.add_typer(keys_app, name="keys")


def _fail(message: str) -> NoReturn:
    """Exit 1 with exactly one line on stderr: what was wrong and what to do."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    from accord.gateway.admin.home import AdminError
    from accord.gateway.keys.store import KeyStoreError

    try:
        yield
    except (AdminError, KeyStoreError) as e:
        _fail(str(e))


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2))


def _home(path: Path) -> Home:
    from accord.gateway.node.config import Home

    return Home(Path(os.path.abspath(path.expanduser())))


def _now() -> datetime:
    return datetime.now(UTC)


def _fingerprint_lines(fingerprint: str, indent: str) -> str:
    """Four groups of four hex digits per line (64 bits), as people read them aloud."""
    groups = fingerprint.split()
    lines = [" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4)]
    return ("\n" + indent).join(lines)


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NodeOption = Annotated[
    str,
    typer.Option(
        "--node",
        envvar="ACCORD_NODE",
        metavar="URL",
        help="The node's local API URL, as `accord init` printed it (or ACCORD_NODE).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="ACCORD_TOKEN",
        metavar="TOKEN",
        help="Your API token (or ACCORD_TOKEN).",
        show_default=False,
    ),
]
CaOption = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        envvar="ACCORD_CA",
        metavar="FILE",
        help="The certificate to trust for --node: the ca_file `accord init` printed "
        "(or ACCORD_CA). Default: the system's trust store.",
        show_default=False,
    ),
]
IdArgument = Annotated[
    str, typer.Argument(metavar="ID", help="The message id.", show_default=False)
]


@contextlib.contextmanager
def _client_refusals() -> Iterator[None]:
    try:
        yield
    except ClientError as e:
        _fail(str(e))
    except Exception as e:
        # The key store (and the crypto it loads) is imported only by the commands that
        # ask for a passphrase; a KeyStoreError cannot exist before it is.
        keystore = sys.modules.get("accord.gateway.keys.store")
        if keystore is not None and isinstance(e, keystore.KeyStoreError):
            _fail(str(e))
        raise


@app.callback()
def _root() -> None:
    """Accord gateway node and tools."""


def _stdout() -> Console:
    # Wide enough that a message id is never folded when the output is piped.
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 160))
    return console


def _read_body(body: str | None, body_file: Path | None) -> str:
    if body is not None:
        return body
    assert body_file is not None
    try:
        data = sys.stdin.buffer.read() if str(body_file) == "-" else body_file.read_bytes()
    except OSError as e:
        raise ClientError(f"cannot read {body_file}: {e.strerror}. Check --body-file") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClientError(
            f"{body_file} is not UTF-8 text. Convert it, or send it with --attach instead"
        ) from e


def _moment(value: object, *, seconds: bool = False) -> str:
    """An ISO 8601 time as `YYYY-MM-DD HH:MM[:SS]` (UTC as the node reports it)."""
    if not isinstance(value, str):
        return ""
    text = value.replace("T", " ")
    return text[:19] if seconds else text[:16]
