"""The agreement's commands of `accord` (CLI.md): `consent grant|revoke|request|list|use`,
`forward` and `provenance`.

They talk to a running node's local API as the user whose token they carry, like the
other users' commands. Exit 0 on success, 1 on a refusal with one line on stderr saying
why and what to do (a refused forward names the missing, expired, revoked or used
consent), 2 on a usage error. `--json` prints one JSON document on stdout.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from accord.gateway.cli._common import (
    CaOption,
    IdArgument,
    JsonOption,
    NodeOption,
    TokenOption,
    _client_refusals,
    _print_json,
    app,
)
from accord.gateway.client.consent import PolicyClient

__all__: list[str] = []  # commands register themselves on `gateway.cli.app`

consent_app = typer.Typer(
    name="consent",
    help="Consent to pass a message on (art. 7.3) or use it for another purpose (art. 7.2).",
    no_args_is_help=True,
)
app.add_typer(consent_app, name="consent")

ToOption = Annotated[
    str, typer.Option("--to", metavar="PARTY", help="The third party.", show_default=False)
]
PurposeOption = Annotated[
    str, typer.Option("--purpose", metavar="TEXT", help="The purpose.", show_default=False)
]


def parse_expiry(text: str) -> datetime:
    """`--expires`: a date (the end of that day, UTC) or an ISO 8601 time."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise typer.BadParameter(
            "give a date like 2026-12-31 or a time like 2026-12-31T18:00Z"
        ) from e
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _show(result: dict[str, Any], json_output: bool, line: str) -> None:
    if json_output:
        _print_json(result)
    else:
        Console(highlight=False).print(Text(line))


@consent_app.command("grant")
def grant(
    message_id: IdArgument,
    to: ToOption,
    purpose: PurposeOption,
    expires: Annotated[
        str, typer.Option("--expires", metavar="DATE", help="Last day (UTC) it may be used.")
    ],
    node: NodeOption,
    token: TokenOption,
    forwarder: Annotated[
        str | None,
        typer.Option("--forwarder", metavar="PARTY", help="Default: the message's recipient."),
    ] = None,
    sign: Annotated[
        bool, typer.Option("--sign", help="Also sign with your signatory key (a head or deputy).")
    ] = False,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Consent, as the originator, to passing message ID on to --to (art. 7.3).

    A --to equal to the recipient itself consents to a use for another purpose (art. 7.2).
    The token is signed by this node's seal and sent to the forwarding Party.
    """
    from accord.gateway.keys.store import SIGNATORY_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    until = parse_expiry(expires)
    body: dict[str, Any] = {
        "to": to,
        "purpose": purpose,
        "expires": until.isoformat(),
        "forwarder": forwarder,
    }
    with _client_refusals(), PolicyClient(node, token, ca) as client:
        if sign:
            body["signatory_passphrase"] = passphrase_from_env_or_prompt(
                SIGNATORY_PASSPHRASE_VAR, "Passphrase of your signing key"
            ).decode("utf-8")
        result = client.grant(message_id, body)
    _show(
        result,
        json_output,
        f"consent {result.get('nonce')} granted: {result.get('forwarder')} may pass "
        f"{message_id} to {to} for «{purpose}» until {until:%Y-%m-%d %H:%M} UTC",
    )


@consent_app.command("revoke")
def revoke(
    nonce: Annotated[str, typer.Argument(metavar="CONSENT", help="The consent's nonce.")],
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Withdraw a consent you granted, before it is used; the forwarder is told."""
    with _client_refusals(), PolicyClient(node, token, ca) as client:
        result = client.revoke(nonce)
    _show(result, json_output, f"consent {nonce} revoked")


@consent_app.command("request")
def request(
    message_id: IdArgument,
    to: ToOption,
    purpose: PurposeOption,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Ask the originator of a received message for consent to pass it to --to."""
    with _client_refusals(), PolicyClient(node, token, ca) as client:
        result = client.ask(message_id, to, purpose)
    _show(result, json_output, f"consent request {result.get('message_id')} queued")


@consent_app.command("use")
def use(
    message_id: IdArgument,
    purpose: PurposeOption,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Record a use of received content; another purpose than the stated one needs the
    originator's consent (art. 7.2)."""
    with _client_refusals(), PolicyClient(node, token, ca) as client:
        result = client.use(message_id, purpose)
    under = f" under consent {result['consent']}" if result.get("consent") else ""
    _show(result, json_output, f"use of {message_id} for «{purpose}» recorded{under}")


@consent_app.command("list")
def list_(
    node: NodeOption,
    token: TokenOption,
    message_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Only this message's.")
    ] = None,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Consents this node granted or received, and where each stands."""
    with _client_refusals(), PolicyClient(node, token, ca) as client:
        rows = client.consents(message_id)
    if json_output:
        _print_json(rows)
        return
    out = Console(highlight=False)
    for r in rows:
        out.print(
            Text(
                f"{r['nonce'][:16]}  {r['message_id']}  {r['originator']} → {r['forwarder']} → "
                f"{r['third_party']}  «{r['purpose']}»  until {r['expires']}  {r['status']}"
            )
        )


@app.command()
def forward(
    message_id: IdArgument,
    to: ToOption,
    node: NodeOption,
    token: TokenOption,
    purpose: Annotated[
        str | None,
        typer.Option("--purpose", metavar="TEXT", help="Use the consent for this purpose."),
    ] = None,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Forward a received message to a third party (art. 7.3): refused (exit 1) unless a
    recorded consent of the originator covers it."""
    with _client_refusals(), PolicyClient(node, token, ca) as client:
        result = client.forward(message_id, to, purpose)
    _show(
        result,
        json_output,
        f"message {message_id} forwarded to {to} under consent {result.get('consent')}",
    )


@app.command()
def remark(
    message_id: IdArgument,
    marking: Annotated[
        str, typer.Option("--marking", metavar="LEVEL", help="The new level.", show_default=False)
    ],
    node: NodeOption,
    token: TokenOption,
    caveat: Annotated[
        list[str] | None, typer.Option("--caveat", metavar="C", help="A caveat (repeatable).")
    ] = None,
    sign: Annotated[
        bool, typer.Option("--sign", help="Also sign with your signatory key (a head or deputy).")
    ] = False,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Change the marking of a message you originated (art. 7.1): a new statement signed
    by this node's seal (and, with --sign, your signatory key) goes to the recipient; no
    one else can change a marking. You must be cleared for the current marking. Where
    the profile asks two signatories for a downgrade, the first one's re-marking waits
    (pending-approval) until a different signatory runs the same command."""
    from accord.gateway.keys.store import SIGNATORY_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    with _client_refusals(), PolicyClient(node, token, ca) as client:
        passphrase = (
            passphrase_from_env_or_prompt(
                SIGNATORY_PASSPHRASE_VAR, "Passphrase of your signing key"
            ).decode("utf-8")
            if sign
            else None
        )
        result = client.remark(message_id, marking, list(caveat or []), passphrase)
    level = result.get("marking", {}).get("level")
    if result.get("status") == "pending-approval":
        _show(
            result,
            json_output,
            f"re-marking of {message_id} to {level} waits for a second signatory "
            f"(draft {result.get('draft')})",
        )
        return
    _show(result, json_output, f"message {message_id} re-marked {level}")


@app.command()
def provenance(
    message_id: IdArgument,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Prove who signed a message (and, if forwarded, the consent and the forwarder)."""
    with _client_refusals(), PolicyClient(node, token, ca) as client:
        result = client.provenance(message_id)
    if json_output:
        _print_json(result)
        return
    out = Console(highlight=False)
    out.print(
        Text(
            f"message {message_id}: signed by {result['originator']} "
            f"(keys {', '.join(k[:16] for k in result['signed_by'])})"
        )
    )
    fwd = result.get("forwarded")
    if fwd:
        out.print(
            Text(
                f"forwarded by {fwd['forwarder']} under consent "
                f"{fwd['consent']['nonce'][:16]} for «{fwd['consent']['purpose']}»"
            )
        )
