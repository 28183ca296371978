"""The `accord` command line (the contract is ../shared/CLI.md).

Exit codes: 0 success, 1 refused or failed (one line on stderr saying why and what to do),
2 usage error (typer's own).

Each command imports what it needs when it runs: the database layer, the key store and
the web stack are not loaded to print `--help` or to run a command that does not use
them (the eager imports made every `accord` invocation take about a second).
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

if TYPE_CHECKING:
    from .config import Home

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


@app.command()
def demo() -> None:
    """Run the agreement's exchange end to end on this machine and print a transcript."""
    from . import _demo

    _demo.run()


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
    from ._admin import AdminError
    from ._keystore import KeyStoreError

    try:
        yield
    except (AdminError, KeyStoreError) as e:
        _fail(str(e))


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2))


def _home(path: Path) -> Home:
    from .config import Home

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


@app.command()
def init(
    home: HomeOption,
    party: Annotated[str, typer.Option("--party", help="This Party's id, as peers will know it.")],
    name: Annotated[str, typer.Option("--name", help="The Party's display name.")],
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT of the peer API (mutual TLS).")
    ],
    local: Annotated[
        str | None,
        typer.Option(
            "--local",
            help="HOST:PORT of the users' API and console (default: loopback, the next port).",
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database", help="Database URL (default: SQLite in the home), e.g. postgresql://..."
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", help="The agreement profile to copy into the home."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create a node: keys, TLS certificate, config, database and the first admin.

    The key files are encrypted under a passphrase from ACCORD_PASSPHRASE or a prompt.
    Prints the admin's API token once.
    """
    from . import _admin
    from ._keystore import NODE_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    with _refusals():
        _admin.check_new_home(home)
        passphrase = passphrase_from_env_or_prompt(
            NODE_PASSPHRASE_VAR, "Passphrase for the new node's keys", confirm=True
        )
        result = _admin.init_node(
            home,
            party=party,
            name=name,
            listen=listen,
            local=local,
            database=database,
            profile=profile,
            passphrase=passphrase,
            now=_now(),
        )
    if json_output:
        _print_json(
            {
                "party": result.party,
                "node_url": result.node_url,
                "ca_file": str(result.ca_file),
                "admin_token": result.admin_token,
                "fingerprint": result.fingerprint,
                "peer_url": result.peer_url,
                "admin_user": result.admin_user,
                "home": str(result.home),
            }
        )
        return
    typer.echo(f"Created node {result.party} in {result.home}")
    typer.echo(f"  peer API     {result.peer_url} (mutual TLS)")
    typer.echo(f"  local API    {result.node_url} (clients trust {result.ca_file})")
    typer.echo(f"  fingerprint  {_fingerprint_lines(result.fingerprint, ' ' * 15)}")
    typer.echo(f"API token of the user {result.admin_user!r} (shown once, keep it secret):")
    typer.echo(f"  {result.admin_token}")
    typer.echo(
        "Next: `accord peer export --home DIR -o FILE`, give FILE to each peer and read "
        "them the fingerprint over another channel."
    )


@peer_app.command("export")
def peer_export(
    home: HomeOption,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the descriptor to FILE (default: stdout)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Write this node's signed descriptor for peers.

    The descriptor holds the party id, name, endpoint, public keys and TLS certificate;
    its fingerprint is what peers compare out of band.
    """
    from crypto.descriptor import format_fingerprint

    from . import _admin
    from ._keystore import NODE_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    with _refusals():
        passphrase = passphrase_from_env_or_prompt(
            NODE_PASSPHRASE_VAR, "Passphrase for the node's keys"
        )
        data = _admin.export_descriptor(_home(home), passphrase, _now())
        descriptor = _admin.read_descriptor(data)
        if output is not None:
            try:
                output.write_bytes(data)
            except OSError as e:
                _fail(f"cannot write {output}: {e.strerror}. Choose another -o FILE")
    fingerprint = format_fingerprint(descriptor.fingerprint)
    if json_output:
        _print_json(
            {
                "party": descriptor.party,
                "name": descriptor.name,
                "endpoint": descriptor.endpoint,
                "fingerprint": fingerprint,
                "file": None if output is None else str(output),
                "descriptor": json.loads(data),
            }
        )
    elif output is None:
        # The exact signed bytes; a newline only for the eye on a terminal.
        sys.stdout.buffer.write(data + (b"\n" if sys.stdout.isatty() else b""))
        sys.stdout.flush()
    else:
        typer.echo(f"Wrote the descriptor of {descriptor.party} to {output}")
        typer.echo(f"  fingerprint  {_fingerprint_lines(fingerprint, ' ' * 15)}")
        typer.echo("Send the file to the peer and read them the fingerprint over another channel.")


@peer_app.command("add")
def peer_add(
    home: HomeOption,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The peer's descriptor file.", show_default=False)
    ],
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="The fingerprint the peer's admin gave you out of band; refused on mismatch.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Trust a peer from its descriptor.

    Without --fingerprint, show the fingerprint and ask for confirmation (on a terminal
    only); with it, refuse on mismatch.
    """
    from crypto.descriptor import format_fingerprint

    from . import _admin

    with _refusals():
        try:
            data = file.read_bytes()
        except OSError as e:
            _fail(f"cannot read {file}: {e.strerror}. Check the path of the descriptor")
        descriptor = _admin.read_descriptor(data, fingerprint=fingerprint)
        if fingerprint is None:
            shown = format_fingerprint(descriptor.fingerprint)
            if not sys.stdin.isatty():
                _fail(
                    f"no terminal to confirm the fingerprint of {descriptor.party}. Compare it "
                    "with the peer's admin out of band and pass --fingerprint FP"
                )
            typer.echo(f"Peer {descriptor.party} ({descriptor.name}) at {descriptor.endpoint}")
            typer.echo(f"  fingerprint  {_fingerprint_lines(shown, ' ' * 15)}")
            if not typer.confirm(
                "Is this exactly the fingerprint the peer's admin gave you?", default=False
            ):
                _fail(
                    f"{descriptor.party} was not added: the fingerprint was not confirmed. "
                    "Compare it with the peer's admin, then run again"
                )
            fingerprint = descriptor.fingerprint
        result = _admin.add_peer(_home(home), data, fingerprint=fingerprint, now=_now())
    if json_output:
        _print_json(
            {
                "party": result.party,
                "name": result.name,
                "endpoint": result.endpoint,
                "fingerprint": result.fingerprint,
                "change": result.change,
            }
        )
        return
    what = {
        "added": "trusted",
        "updated": "updated from its descriptor",
        "unchanged": "already trusted with this descriptor; nothing changed",
    }[result.change]
    typer.echo(f"Peer {result.party} ({result.name}) {what}.")
    typer.echo(f"  endpoint     {result.endpoint}")
    typer.echo(f"  fingerprint  {_fingerprint_lines(result.fingerprint, ' ' * 15)}")


@user_app.command("add")
def user_add(
    home: HomeOption,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The user's name.", show_default=False)
    ],
    role: Annotated[
        RoleChoice, typer.Option("--role", case_sensitive=False, help="What the user may do.")
    ],
    clearance: Annotated[
        str,
        typer.Option(
            "--clearance", help="Highest marking the user may read: " + ", ".join(CLEARANCES)
        ),
    ] = CLEARANCES[0],
    token_uri: Annotated[
        str | None,
        typer.Option(
            "--token-uri",
            help="A signatory's key on their PKCS#11 token (the passphrase is then its PIN).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create a local user and print its API token once.

    A signatory also gets a personal signing key under their own passphrase
    (ACCORD_SIGNATORY_PASSPHRASE or a prompt), or on their PKCS#11 token (--token-uri).
    """
    from storage import Role

    from . import _admin
    from ._keystore import SIGNATORY_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    with _refusals():
        level = _admin.parse_clearance(clearance)
        signatory_passphrase = None
        if role is RoleChoice.SIGNATORY:
            signatory_passphrase = passphrase_from_env_or_prompt(
                SIGNATORY_PASSPHRASE_VAR,
                f"Passphrase for {name}'s personal signing key (theirs, not the node's)",
                confirm=True,
            )
        result = _admin.add_user(
            _home(home),
            name,
            role=Role(role.value),
            clearance=level,
            signatory_passphrase=signatory_passphrase,
            now=_now(),
            signatory_token_uri=token_uri,
        )
    if json_output:
        _print_json(
            {
                "user": result.user,
                "role": result.role.value,
                "token": result.token,
                "clearance": result.clearance,
                "signatory_key_id": result.signatory_key_id,
            }
        )
        return
    typer.echo(f"Created user {result.user} ({result.role.value}, clearance {result.clearance})")
    typer.echo(f"API token of {result.user} (shown once, keep it secret):")
    typer.echo(f"  {result.token}")
    if result.signatory_key_id is not None:
        typer.echo(f"Personal signing key {result.signatory_key_id}.")
        typer.echo(
            "Peers accept it once they have the new descriptor: run `accord peer export` "
            "and send it to them."
        )


@app.callback()
def _root() -> None:
    """Accord gateway node and tools."""


def main() -> None:
    app()


# Register serve, the users' commands, the workflow's (reply, confirm, case, agreement),
# the policy's (consent, forward, remark, provenance), the auditors' (bundle, verify,
# audit) and the key lifecycle's (keys, doctor).
from . import (  # noqa: E402, F401
    _cli_audit,
    _cli_keys,
    _cli_node,
    _cli_policy,
    _cli_user,
    _cli_workflow,
)
