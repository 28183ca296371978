"""The admin's commands on a node's home (CLI.md "Admin"): init, peer export and add,
user add; and the demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from accord.gateway.cli._common import (
    CLEARANCES,
    HomeOption,
    JsonOption,
    RoleChoice,
    _fail,
    _fingerprint_lines,
    _home,
    _now,
    _print_json,
    _refusals,
    app,
    peer_app,
    user_app,
)

__all__: list[str] = []  # commands register themselves on `gateway.cli.app`


@app.command()
def demo() -> None:
    """Run the agreement's exchange end to end on this machine and print a transcript."""
    from accord.gateway import demo as _demo

    _demo.run()


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
    from accord.gateway.admin import home as _admin
    from accord.gateway.keys.store import NODE_PASSPHRASE_VAR, passphrase_from_env_or_prompt

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
    from accord.crypto.descriptor import format_fingerprint
    from accord.gateway.admin import home as _admin
    from accord.gateway.keys.store import NODE_PASSPHRASE_VAR, passphrase_from_env_or_prompt

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
    from accord.crypto.descriptor import format_fingerprint
    from accord.gateway.admin import home as _admin

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
    from accord.gateway.admin import home as _admin
    from accord.gateway.keys.store import SIGNATORY_PASSPHRASE_VAR, passphrase_from_env_or_prompt
    from accord.storage import Role

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
