"""`accord keys ...` and `accord doctor`: the key lifecycle on a node's home (CLI.md).

Every command works whether the node runs or not: changes go to the home's key files and
database, and a running node picks them up (see gateway/_keys.py).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated

import typer

from accord.gateway.cli._common import (
    HomeOption,
    JsonOption,
    _fail,
    _home,
    _now,
    _print_json,
    _refusals,
    _time,
    app,
    keys_app,
)

# `gateway._keys.DEFAULT_OVERLAP`, spelled here so that parsing a command needs neither
# storage nor crypto (tests/gateway/test_cli_startup.py checks both agree).
DEFAULT_OVERLAP_DAYS = 7

NEW_PASSPHRASE_VAR = "ACCORD_NEW_PASSPHRASE"  # noqa: S105 - the name of a variable


def _node_passphrase() -> bytes:
    from accord.gateway.keys.store import NODE_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    return passphrase_from_env_or_prompt(NODE_PASSPHRASE_VAR, "Passphrase for the node's keys")


@keys_app.command("list")
def keys_list(
    home: HomeOption,
    peers: Annotated[
        bool, typer.Option("--peers", help="Also list the peers' keys this node trusts.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Every key this node ever held: id, kind, status, validity, owner, expiry warning."""
    from accord.gateway.keys import lifecycle as _keys

    with _refusals():
        keys = _keys.key_status(_home(home), now=_now(), include_peers=peers)
    if json_output:
        _print_json([k.to_json() for k in keys])
        return
    typer.echo(
        f"{'KEY ID':<64}  {'KIND':<10}  {'STATUS':<7}  {'NOT BEFORE':<20}  {'NOT AFTER':<20}  OWNER"
    )
    for k in keys:
        typer.echo(
            f"{k.key_id:<64}  {k.kind.value:<10}  {k.status.value:<7}  "
            f"{_time(k.not_before) or '':<20}  {_time(k.not_after) or '-':<20}  {k.owner}"
        )
        if k.reason:
            typer.echo(f"{'':<66}revoked: {k.reason}")
        if k.warning:
            typer.echo(f"{'':<66}WARNING: {k.warning}")


@keys_app.command("rotate")
def keys_rotate(
    home: HomeOption,
    key: Annotated[str, typer.Option("--key", help="seal, encryption or tls.")],
    overlap_days: Annotated[
        float,
        typer.Option("--overlap-days", help="How long the old key stays accepted (days)."),
    ] = DEFAULT_OVERLAP_DAYS,
    token_uri: Annotated[
        str | None,
        typer.Option(
            "--token-uri",
            help="Make the new seal on a PKCS#11 token: pkcs11:token=..;object=.."
            "?module-path=..&pin-source=env:VAR",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Make the next key, announce it to peers signed by the current one, keep the old one
    for the overlap window."""
    from accord.gateway.keys import lifecycle as _keys

    with _refusals():
        result = _keys.rotate(
            _home(home),
            key,
            passphrase=_node_passphrase(),
            now=_now(),
            overlap=timedelta(days=overlap_days),
            token_uri=token_uri,
        )
    if json_output:
        _print_json(
            {
                "kind": result.kind.value,
                "old_key_id": result.old_key_id,
                "new_key_id": result.new_key_id,
                "effective": _time(result.effective),
                "overlap_until": _time(result.overlap_until),
                "announced_to": list(result.announced_to),
                "fingerprint": result.fingerprint,
            }
        )
        return
    typer.echo(f"Rotated the {result.kind.value} key.")
    typer.echo(f"  new  {result.new_key_id}")
    typer.echo(f"  old  {result.old_key_id} (accepted until {_time(result.overlap_until)})")
    peers = ", ".join(result.announced_to) or "no peers yet"
    typer.echo(f"The rotation statement is queued for: {peers}. A running node sends it now;")
    typer.echo("a stopped node sends it at its next start.")
    typer.echo(f"New fingerprint (for peers added from now on): {result.fingerprint}")


@keys_app.command("revoke")
def keys_revoke(
    home: HomeOption,
    key_id: Annotated[str, typer.Argument(help="The key id (see `accord keys list`).")],
    reason: Annotated[str, typer.Option("--reason", help="Why the key is revoked.")],
    json_output: JsonOption = False,
) -> None:
    """Revoke a key: peers are told (signed by the current seal); what it signed before
    stays verifiable, what claims a later time is refused."""
    from accord.gateway.keys import lifecycle as _keys

    with _refusals():
        h = _home(home)
        local = any(
            k.key_id == key_id and k.local
            for k in _keys.key_status(h, now=_now(), include_peers=True)
        )
        result = _keys.revoke(
            h, key_id, reason=reason, passphrase=_node_passphrase() if local else None, now=_now()
        )
    if json_output:
        _print_json(
            {
                "key_id": result.key_id,
                "kind": result.kind.value,
                "owner": result.owner,
                "revoked_at": _time(result.revoked_at),
                "reason": result.reason,
                "announced_to": list(result.announced_to),
            }
        )
        return
    typer.echo(f"Revoked {result.kind.value} key {result.key_id} of {result.owner}.")
    if result.announced_to:
        typer.echo(f"The revocation is queued for: {', '.join(result.announced_to)}.")


@keys_app.command("history")
def keys_history(home: HomeOption, json_output: JsonOption = False) -> None:
    """Every key event: generated, rotated, revoked, peers' changes applied."""
    from accord.gateway.keys import lifecycle as _keys

    with _refusals():
        events = list(_keys.key_events(_home(home)))
    if json_output:
        _print_json(events)
        return
    for e in events:
        reason = f"  ({e['reason']})" if e["reason"] else ""
        typer.echo(
            f"{e['at']}  {e['event']:<18} {e['kind']:<10} {e['key_id'][:16]}…  "
            f"{e['owner']}  by {e['actor']}{reason}"
        )


@keys_app.command("passphrase")
def keys_passphrase(home: HomeOption) -> None:
    """Change the passphrase of the node's key files: all re-encrypted, or none.

    The current passphrase comes from ACCORD_PASSPHRASE or a prompt, the new one from
    ACCORD_NEW_PASSPHRASE or a prompt (asked twice).
    """
    from accord.gateway.keys import lifecycle as _keys
    from accord.gateway.keys.store import NODE_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    with _refusals():
        old = _node_passphrase()
        new = passphrase_from_env_or_prompt(
            NEW_PASSPHRASE_VAR, "New passphrase for the node's keys", confirm=True
        )
        count = _keys.change_passphrase(_home(home), old=old, new=new, now=_now())
    typer.echo(f"Re-encrypted {count} key file(s) under the new passphrase.")
    if os.environ.get(NODE_PASSPHRASE_VAR):
        typer.echo(f"Update {NODE_PASSPHRASE_VAR} wherever the node is started.")


@app.command()
def doctor(
    home: HomeOption,
    peer: Annotated[
        str | None, typer.Option("--peer", help="Only this peer (its party id).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Explain exactly why this node and its peers are or are not trusted: pin, descriptor
    signature, fingerprint, key status, expiry. Exit 1 if any check fails."""
    from accord.gateway.keys import lifecycle as _keys

    with _refusals():
        findings = _keys.diagnose(_home(home), now=_now(), peer=peer)
    failed = [f for f in findings if not f.ok]
    if json_output:
        _print_json({"ok": not failed, "findings": [f.to_json() for f in findings]})
    else:
        for f in findings:
            mark = "ok  " if f.ok else "FAIL"
            typer.echo(f"{mark}  {f.subject}: {f.check}: {f.detail}")
    if failed:
        if not json_output:
            _fail(f"{len(failed)} check(s) failed: see above")
        raise typer.Exit(1)
