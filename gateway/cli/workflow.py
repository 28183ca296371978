"""The workflow's commands of `accord`: reply, confirm, case, agreement (CLI.md "Users").

They talk to a running node's local API as the user whose token they carry, like the
other users' commands. The node decides (the CLI only shapes the request): a step the
case does not allow, a refusal without reasons (art. 5.3), a confirmation by someone
other than a signatory (art. 4.4) all come back as the node's one-line refusal, exit 1.

Invariants:
- Exit 0 on success, 1 on a refusal with one line on stderr, 2 on a usage error.
- `--json` prints one JSON document on stdout and nothing else there.
- Text from the node or the peer is printed as text, never as console markup.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from accord.gateway.cli._common import (
    CaOption,
    IdArgument,
    JsonOption,
    NodeOption,
    TokenOption,
    _client_refusals,
    _moment,
    _print_json,
    _read_body,
    _stdout,
    app,
)
from accord.gateway.client.local import ClientError, LocalClient, _id, _object

__all__: list[str] = []  # commands register themselves on `gateway.cli.app`

agreement_app = typer.Typer(
    name="agreement",
    help="The agreement itself: its status with each peer, notice of termination (art. 13).",
    no_args_is_help=True,
)
app.add_typer(agreement_app, name="agreement")


class ReplyKind(StrEnum):
    """The steps `accord reply` takes (CLI.md), and the requesting Party's own."""

    ACKNOWLEDGE = "acknowledge"
    CONFIRMATION_REQUEST = "confirmation-request"
    INFO_REQUEST = "info-request"
    DELAY = "delay"
    CONDITIONS = "conditions"
    PARTIAL_REFUSAL = "partial-refusal"
    REFUSAL = "refusal"
    RESULT = "result"
    INFORMATION = "information"
    ACCEPT_CONDITIONS = "accept-conditions"
    DECLINE_CONDITIONS = "decline-conditions"
    CONSULTATION = "consultation"
    DISCLOSURE_NOTICE = "disclosure-notice"


BodyOption = Annotated[str | None, typer.Option("--body", metavar="TEXT", help="The text.")]
BodyFileOption = Annotated[
    Path | None,
    typer.Option("--body-file", metavar="FILE", help="Read the text (UTF-8) from FILE, or -."),
]


def _text(body: str | None, body_file: Path | None) -> str:
    if body is not None and body_file is not None:
        raise typer.BadParameter(
            "give the text with at most one of --body TEXT or --body-file FILE",
            param_hint="'--body' / '--body-file'",
        )
    if body is None and body_file is None:
        return ""
    return _read_body(body, body_file)


def _signatory_passphrase(client: LocalClient, what: str) -> str:
    from accord.gateway.keys.store import SIGNATORY_PASSPHRASE_VAR, passphrase_from_env_or_prompt

    me = client.whoami()
    if me.get("role") != "signatory":
        raise ClientError(
            f"{me.get('user')} is {me.get('role')}: only a signatory (head or deputy) {what}. "
            "Ask one to run this command"
        )
    return passphrase_from_env_or_prompt(
        SIGNATORY_PASSPHRASE_VAR, f"Passphrase of {me.get('user')}'s signing key"
    ).decode("utf-8")


# --- reply, confirm ----------------------------------------------------------------------


@app.command()
def reply(
    case_id: IdArgument,
    node: NodeOption,
    token: TokenOption,
    kind: Annotated[
        ReplyKind,
        typer.Option(
            "--kind", case_sensitive=False, help="The step (art. 5, 6, 7.4).", show_default=False
        ),
    ],
    ca: CaOption = None,
    reasons: Annotated[
        str | None,
        typer.Option(
            "--reasons",
            metavar="TEXT",
            help="Written reasons; required for a refusal or partial refusal (art. 5.3).",
        ),
    ] = None,
    body: BodyOption = None,
    body_file: BodyFileOption = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option("--attach", metavar="FILE", help="Attach FILE; repeat for several."),
    ] = None,
    marking: Annotated[
        str, typer.Option("--marking", metavar="LEVEL", help="Confidentiality level.")
    ] = "OFFICIAL",
    caveat: Annotated[
        list[str] | None, typer.Option("--caveat", metavar="CAVEAT", help="A caveat; repeat.")
    ] = None,
    despite_disclosure: Annotated[
        bool,
        typer.Option(
            "--despite-disclosure",
            help="Send confidential information although the requesting Party gave advance "
            "notice of disclosure (art. 7.4); the decision is recorded in the case.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Answer a request in the agreement's workflow (art. 5, 6, 7.4).

    ID is the request's message id (the case). Prints the answer's message id.
    """
    text = _text(body, body_file)
    files = list(attach or [])
    meta: dict[str, Any] = {
        "type": "notice" if kind is ReplyKind.DISCLOSURE_NOTICE else "reply",
        "in_reply_to": case_id,
        "workflow": {
            "kind": kind.value,
            "reasons": reasons,
            "despite_disclosure": despite_disclosure,
        },
        "marking": {
            "level": " ".join(marking.split()).upper(),
            "caveats": [" ".join(c.split()).upper() for c in caveat or []],
        },
        "body": text,
        "fields": {},
    }
    with _client_refusals(), LocalClient(node, token, ca) as client:
        result = client.send(meta, files)
    _sent(result, f"{kind.value.capitalize()} on case {case_id}", case_id, json_output)


@app.command()
def confirm(
    case_id: IdArgument,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    body: BodyOption = None,
    body_file: BodyFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Confirm a request in writing (art. 4.2), signed by a signatory (art. 4.4).

    An urgent oral request within the profile's window, or one the requested Party
    doubted.
    """
    text = _text(body, body_file)
    with _client_refusals(), LocalClient(node, token, ca) as client:
        passphrase = _signatory_passphrase(client, "confirms a request in writing (art. 4.4)")
        result = client.send(
            {
                "type": "reply",
                "in_reply_to": case_id,
                "workflow": {"kind": "confirm"},
                "marking": {"level": "OFFICIAL", "caveats": []},
                "body": text,
                "fields": {},
                "signatory_passphrase": passphrase,
            }
        )
    _sent(result, f"Written confirmation of case {case_id}", case_id, json_output)


def _sent(result: dict[str, Any], what: str, case_id: str, as_json: bool) -> None:
    if as_json:
        _print_json({**result, "case_id": case_id})
        return
    out = _stdout()
    out.print(Text(f"{what}: message {result.get('message_id')} {result.get('status')}."))
    out.print(Text(f"Follow the case with: accord case {case_id}"))


# --- case ----------------------------------------------------------------------------------


@app.command()
def case(
    case_id: IdArgument,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    grant: Annotated[
        str | None,
        typer.Option(
            "--grant",
            metavar="USER",
            help="Give USER need-to-know of a case whose fact is confidential (art. 6.3); "
            "signatories only.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """A request's case: its state, overdue flag (art. 4.2), next steps, history."""
    with _client_refusals(), LocalClient(node, token, ca) as client:
        if grant is not None:
            client._request("POST", f"/cases/{_id(case_id)}/access", json={"user": grant})
        view = _object(client._request("GET", f"/cases/{_id(case_id)}"))
    if json_output:
        _print_json(view)
        return
    out = _stdout()
    out.print(
        Text(
            f"Case {view.get('case_id')}: {view.get('requesting')} → {view.get('requested')}, "
            f"{view.get('state')}"
        )
    )
    if view.get("overdue"):
        out.print(
            Text(
                f"OVERDUE: the written confirmation of this urgent oral request was due "
                f"{_moment(view.get('confirmation_due'))} (art. 4.2)",
                style="bold red",
            )
        )
    elif view.get("confirmation_due") and not view.get("confirmed_at"):
        out.print(Text(f"Written confirmation due by {_moment(view.get('confirmation_due'))}"))
    if view.get("confirmed_late"):
        out.print(Text("Confirmed in writing after the deadline (art. 4.2)"))
    for flag, label in (
        ("partially_refused", "Partly refused (art. 5.1)"),
        ("conditions_accepted", "Conditions accepted (art. 5.2)"),
        ("confidential_fact", "The fact of the request is confidential (art. 6.3)"),
    ):
        if view.get(flag):
            out.print(Text(label))
    if view.get("disclosure_noticed_at"):
        out.print(Text("Advance notice of disclosure given (art. 7.4)"))
    allowed = view.get("allowed") or {}
    for side in ("requesting", "requested"):
        steps = allowed.get(side) or []
        out.print(Text(f"The {side} Party may: {', '.join(steps) if steps else 'nothing'}"))
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("At", no_wrap=True)
    table.add_column("Step", no_wrap=True)
    table.add_column("By", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Message", no_wrap=True)
    for s in view.get("steps") or []:
        table.add_row(
            str(s.get("seq")),
            Text(_moment(s.get("at"), seconds=True)),
            Text(str(s.get("kind"))),
            Text(str(s.get("party"))),
            Text(f"{s.get('from') or '—'} → {s.get('to')}"),
            Text(str(s.get("message_id"))),
        )
    out.print(table)


# --- agreement -----------------------------------------------------------------------------


@agreement_app.command("status")
def agreement_status(
    node: NodeOption, token: TokenOption, ca: CaOption = None, json_output: JsonOption = False
) -> None:
    """Where the agreement stands with each peer (art. 13).

    In force, notice given, terminated (art. 7 duties still bind), or expired.
    """
    with _client_refusals(), LocalClient(node, token, ca) as client:
        rows = client._request("GET", "/agreement")
    if json_output:
        _print_json(rows)
        return
    table = Table()
    for column in ("Peer", "Phase", "Notice received", "Ends", "Art. 7 until", "New requests"):
        table.add_column(column, no_wrap=True)
    for r in rows if isinstance(rows, list) else []:
        table.add_row(
            Text(str(r.get("peer"))),
            Text(str(r.get("phase"))),
            Text(_moment(r.get("notice_received"))),
            Text(_moment(r.get("terminates_at"))),
            Text(_moment(r.get("article7_until"))),
            "accepted" if r.get("accepts_new_requests") else "refused",
        )
    _stdout().print(table)


@agreement_app.command("terminate")
def agreement_terminate(
    node: NodeOption,
    token: TokenOption,
    to: Annotated[
        str, typer.Option("--to", metavar="PARTY", help="The other Party.", show_default=False)
    ],
    ca: CaOption = None,
    body: BodyOption = None,
    body_file: BodyFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Give written notice of termination of the agreement (art. 13.1).

    Signed by a signatory. Six months after it is received no new requests are
    accepted; art. 7 duties bind for five years more (art. 13.2).
    """
    text = _text(body, body_file)
    with _client_refusals(), LocalClient(node, token, ca) as client:
        passphrase = _signatory_passphrase(client, "gives notice of termination (art. 13.1)")
        result = client.send(
            {
                "to": to,
                "type": "notice",
                "agreement": {"kind": "termination-notice"},
                "marking": {"level": "OFFICIAL", "caveats": []},
                "purpose": "Уведомление о намерении прекратить действие Соглашения (ст. 13)",
                "body": text,
                "fields": {},
                "signatory_passphrase": passphrase,
            }
        )
    if json_output:
        _print_json(result)
        return
    _stdout().print(
        Text(f"Notice of termination {result.get('message_id')} {result.get('status')} for {to}.")
    )
