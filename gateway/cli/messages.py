"""The users' commands of `accord` (CLI.md "Users"): send, sign, inbox, outbox, read, status.

They talk to a running node's local API through `gateway._client.LocalClient`, as the user
whose token they carry (`--node URL --token TOKEN [--ca FILE]`, or ACCORD_NODE, ACCORD_TOKEN
and ACCORD_CA).

Invariants:
- Exit 0 on success, 1 on any refusal or failure with exactly one line on stderr (the
  node's reason and what to do next), 2 on a usage error. `--json` prints one JSON
  document on stdout and nothing else there; progress bars go to stderr, on a terminal only.
- Attachments stream both ways. `read --save-attachments DIR` writes each one to a
  temporary file in DIR and gives it its name only once its size and SHA-256 match the
  signed manifest; a name that could leave DIR, or one that already exists there, is
  refused before anything is downloaded.
- Text that came from a message is printed as text, never interpreted as console markup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
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
from accord.gateway.client.local import ClientError, LocalClient, SavedAttachment

__all__: list[str] = []  # commands register themselves on `gateway.cli.app`

# The art. 4.3 fields of a request, as the node stores them and as people read them.
REQUEST_FIELDS = (
    ("essence", "Essence of the case"),
    ("justification", "Purpose and justification"),
    ("assistance", "Requested assistance"),
    ("other", "Other information"),
)


class MessageType(StrEnum):
    REQUEST = "request"
    REPLY = "reply"
    NOTICE = "notice"


@contextlib.contextmanager
def _progress(total: int, description: str) -> Iterator[Any]:
    """A transfer bar on stderr when stderr is a terminal; otherwise nothing is shown.
    Yields a callback taking the number of bytes just moved."""
    console = Console(stderr=True)
    if total <= 0 or not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# --- send ------------------------------------------------------------------------------


@app.command()
def send(
    node: NodeOption,
    token: TokenOption,
    to: Annotated[
        str,
        typer.Option("--to", metavar="PARTY", help="The recipient Party's id.", show_default=False),
    ],
    marking: Annotated[
        str,
        typer.Option(
            "--marking",
            metavar="LEVEL",
            help="Confidentiality level: OFFICIAL, RESTRICTED or CONFIDENTIAL.",
            show_default=False,
        ),
    ],
    purpose: Annotated[
        str,
        typer.Option(
            "--purpose",
            metavar="TEXT",
            help="What the content may be used for (art. 7.2).",
            show_default=False,
        ),
    ],
    ca: CaOption = None,
    caveat: Annotated[
        list[str] | None,
        typer.Option(
            "--caveat", metavar="CAVEAT", help="A caveat such as ORCON; repeat for several."
        ),
    ] = None,
    body: Annotated[
        str | None, typer.Option("--body", metavar="TEXT", help="The message text.")
    ] = None,
    body_file: Annotated[
        Path | None,
        typer.Option(
            "--body-file",
            metavar="FILE",
            help="Read the message text (UTF-8) from FILE, or - for stdin.",
        ),
    ] = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option(
            "--attach", metavar="FILE", help="Attach FILE (streamed, any size); repeat for several."
        ),
    ] = None,
    message_type: Annotated[
        MessageType, typer.Option("--type", case_sensitive=False, help="The kind of message.")
    ] = MessageType.REQUEST,
    in_reply_to: Annotated[
        str | None,
        typer.Option("--in-reply-to", metavar="ID", help="The id of the message this answers."),
    ] = None,
    urgent_oral: Annotated[
        bool,
        typer.Option(
            "--urgent-oral",
            help="Register a request first made orally because it was urgent; it must be "
            "confirmed in writing within the profile's window (art. 4.2).",
        ),
    ] = False,
    essence: Annotated[
        str | None,
        typer.Option(
            "--essence", metavar="TEXT", help="Request: statement of the essence of the case."
        ),
    ] = None,
    justification: Annotated[
        str | None,
        typer.Option(
            "--justification",
            metavar="TEXT",
            help="Request: purpose and justification of the request.",
        ),
    ] = None,
    assistance: Annotated[
        str | None,
        typer.Option("--assistance", metavar="TEXT", help="Request: the assistance requested."),
    ] = None,
    other: Annotated[
        str | None,
        typer.Option("--other", metavar="TEXT", help="Request: any other useful information."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Seal and queue a message; prints its message id.

    A request (the default type) needs the art. 4.3 fields --essence, --justification and
    --assistance, and leaves only once a signatory has signed it: sent by an operator it
    waits as a draft for `accord sign`; sent by a signatory it is signed at once with their
    key (passphrase from ACCORD_SIGNATORY_PASSPHRASE or a prompt).
    """
    # 1. Usage: exactly one body source; request-only options only on requests.
    if (body is None) == (body_file is None):
        raise typer.BadParameter(
            "give the text with exactly one of --body TEXT or --body-file FILE",
            param_hint="'--body' / '--body-file'",
        )
    fields = {
        "essence": essence,
        "justification": justification,
        "assistance": assistance,
        "other": other,
    }
    given = {k: v for k, v in fields.items() if v is not None}
    if message_type is not MessageType.REQUEST:
        if given:
            raise typer.BadParameter(
                f"--{next(iter(given))} belongs to a request (art. 4.3), not a {message_type}",
                param_hint="'--type'",
            )
        if urgent_oral:
            raise typer.BadParameter(
                "--urgent-oral registers an urgent request (art. 4.2), not a " + message_type,
                param_hint="'--type'",
            )
    files = list(attach or [])
    with _client_refusals():
        # 2. The agreement's content rules, refused before anything is uploaded.
        if message_type is MessageType.REQUEST:
            missing = [
                f"--{k}"
                for k in ("essence", "justification", "assistance")
                if not (given.get(k) or "").strip()
            ]
            if missing:
                raise ClientError(
                    f"a request must state {', '.join(missing)} (agreement art. 4.3). Add "
                    "them, or send it with --type notice"
                )
        text = _read_body(body, body_file)
        names = [p.name for p in files]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ClientError(
                f"two attachments are named {duplicates[0]!r}: the recipient could not save "
                "both. Rename one"
            )
        meta: dict[str, Any] = {
            "to": to,
            "type": message_type.value,
            "marking": {
                "level": " ".join(marking.split()).upper(),
                "caveats": [" ".join(c.split()).upper() for c in caveat or []],
            },
            "purpose": purpose,
            "body": text,
            "fields": given,
            "attachments": names,
            "in_reply_to": in_reply_to,
            "urgent_oral": urgent_oral,
        }
        with LocalClient(node, token, ca) as client:
            # 3. A signatory's request is signed at once (art. 4.4): ask for the passphrase
            #    only then, and before the upload starts.
            me = client.whoami()
            if message_type is MessageType.REQUEST and me.get("role") == "signatory":
                from accord.gateway.keys.store import (
                    SIGNATORY_PASSPHRASE_VAR,
                    passphrase_from_env_or_prompt,
                )

                meta["signatory_passphrase"] = passphrase_from_env_or_prompt(
                    SIGNATORY_PASSPHRASE_VAR,
                    f"Passphrase of {me.get('user')}'s signing key",
                ).decode("utf-8")
            total = sum(_size(p) for p in files)
            with _progress(total, f"Sending {len(files)} attachment(s)") as advance:
                result = client.send(meta, files, progress=advance)
    message_id = str(result.get("message_id"))
    status = str(result.get("status"))
    if json_output:
        _print_json({**result, "to": to, "type": message_type.value, "attachments": names})
        return
    out = _stdout()
    if status == "draft":
        out.print(Text(f"Request {message_id} saved as a draft for {to}."))
        out.print(
            Text(f"It leaves once a signatory (head or deputy) runs: accord sign {message_id}")
        )
    else:
        out.print(
            Text(f"{message_type.value.capitalize()} {message_id} sealed and {status} for {to}.")
        )
        out.print(Text(f"Follow it with: accord status {message_id}"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise ClientError(f"cannot read {path}: {e.strerror}. Check the --attach path") from e


# --- sign ------------------------------------------------------------------------------


@app.command()
def sign(
    message_id: IdArgument,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Sign a drafted request with your personal key; it is then queued.

    Only a signatory (head or deputy, art. 4.4) signs. The key's passphrase comes from
    ACCORD_SIGNATORY_PASSPHRASE or a prompt.
    """
    with _client_refusals(), LocalClient(node, token, ca) as client:
        me = client.whoami()
        if me.get("role") != "signatory":
            raise ClientError(
                f"{me.get('user')} is {me.get('role')}: only a signatory (head or deputy) "
                "signs requests (art. 4.4). Ask one to run `accord sign`"
            )
        from accord.gateway.keys.store import (
            SIGNATORY_PASSPHRASE_VAR,
            passphrase_from_env_or_prompt,
        )

        passphrase = passphrase_from_env_or_prompt(
            SIGNATORY_PASSPHRASE_VAR, f"Passphrase of {me.get('user')}'s signing key"
        )
        result = client.sign(message_id, passphrase.decode("utf-8"))
    if json_output:
        _print_json(result)
        return
    _stdout().print(Text(f"Request {result.get('message_id')} signed and {result.get('status')}."))


# --- inbox, outbox ---------------------------------------------------------------------

LimitOption = Annotated[
    int, typer.Option("--limit", metavar="N", min=1, max=500, help="At most this many messages.")
]
OffsetOption = Annotated[
    int, typer.Option("--offset", metavar="N", min=0, help="Skip this many first.")
]


@app.command()
def inbox(
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    json_output: JsonOption = False,
) -> None:
    """List the messages this node received, with their status."""
    _listing("inbox", node, token, ca, limit, offset, json_output)


@app.command()
def outbox(
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    json_output: JsonOption = False,
) -> None:
    """List the messages this node sent or holds as drafts, with their status."""
    _listing("outbox", node, token, ca, limit, offset, json_output)


def _listing(
    box: str, node: str, token: str, ca: Path | None, limit: int, offset: int, as_json: bool
) -> None:
    with _client_refusals(), LocalClient(node, token, ca) as client:
        messages = client.messages(box, limit=limit, offset=offset)
    if as_json:
        _print_json(messages)
        return
    out = _stdout()
    if not messages:
        out.print(f"No messages in the {box}.")
        return
    out.print(f"{box.capitalize()} ({len(messages)})")
    table = Table()
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("From" if box == "inbox" else "To", no_wrap=True)
    table.add_column("Type", no_wrap=True)
    table.add_column("Marking")
    table.add_column("Status", no_wrap=True)
    table.add_column("Created", no_wrap=True)
    for m in messages:
        table.add_row(
            Text(str(m.get("message_id"))),
            Text(str(m.get("from") if box == "inbox" else m.get("to"))),
            Text(str(m.get("type")) + (" ↩" if m.get("in_reply_to") else "")),
            Text(_marking(m.get("marking"))),
            Text(str(m.get("status"))),
            Text(_moment(m.get("created"))),
        )
    out.print(table)


# --- read ------------------------------------------------------------------------------


@app.command()
def read(
    message_id: IdArgument,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    save_attachments: Annotated[
        Path | None,
        typer.Option(
            "--save-attachments",
            help="Save the attachments into DIR, each checked against the signed manifest.",
            metavar="DIR",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Decrypt and show a message you may read; optionally save its attachments."""
    saved: list[SavedAttachment] = []
    with _client_refusals(), LocalClient(node, token, ca) as client:
        message = client.read(message_id)
        if save_attachments is not None:
            total = sum(
                a.get("size", 0) for a in message.get("attachments") or [] if isinstance(a, dict)
            )
            with _progress(total, "Saving attachments") as advance:
                saved = client.save_attachments(message, save_attachments, progress=advance)
    if json_output:
        document = dict(message)
        if save_attachments is not None:
            document["saved"] = [
                {"name": s.name, "path": str(s.path), "size": s.size, "sha256": s.sha256}
                for s in saved
            ]
        _print_json(document)
        return
    _show_message(_stdout(), message, saved)


def _show_message(out: Console, m: dict[str, Any], saved: Sequence[SavedAttachment]) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    rows = [
        ("Message", m.get("message_id")),
        ("From", m.get("from")),
        ("To", m.get("to")),
        ("Type", m.get("type")),
        ("Marking", _marking(m.get("marking"))),
        ("Purpose", m.get("purpose")),
        ("Created", _moment(m.get("created"))),
        ("In reply to", m.get("in_reply_to")),
        ("Status", m.get("status")),
    ]
    for label, value in rows:
        if value not in (None, ""):
            head.add_row(label, Text(str(value)))
    out.print(head)
    fields = m.get("fields") or {}
    if isinstance(fields, dict) and fields:
        out.print()
        known = {k for k, _ in REQUEST_FIELDS}
        for key, label in [*REQUEST_FIELDS, *((k, k) for k in fields if k not in known)]:
            if fields.get(key):
                out.print(Text(f"{label}:", style="bold"))
                out.print(Text("  " + str(fields[key])), soft_wrap=True)
    out.print()
    out.print(Text(str(m.get("body") or "")), soft_wrap=True)
    attachments = m.get("attachments") or []
    if attachments:
        out.print()
        out.print("Attachments")
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("Name")
        table.add_column("Size", justify="right", no_wrap=True)
        table.add_column("SHA-256", no_wrap=True)
        for i, a in enumerate(attachments):
            a = a if isinstance(a, dict) else {}
            table.add_row(
                str(i), Text(str(a.get("name"))), str(a.get("size")), Text(str(a.get("sha256")))
            )
        out.print(table)
    for s in saved:
        out.print(Text(f"Saved {s.path} ({s.size} bytes, SHA-256 matches the manifest)"))


# --- status ----------------------------------------------------------------------------


@app.command()
def status(
    message_id: IdArgument,
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """The message's timeline: draft, signed, queued, delivered, received, failed..."""
    with _client_refusals(), LocalClient(node, token, ca) as client:
        result = client.status(message_id)
    if json_output:
        _print_json(result)
        return
    out = _stdout()
    out.print(
        Text(
            f"Message {result.get('message_id')}: {result.get('status')} "
            f"({'incoming' if result.get('direction') == 'in' else 'outgoing'})"
        )
    )
    case = result.get("case")
    if isinstance(case, dict):
        overdue = " — written confirmation OVERDUE (art. 4.2)" if case.get("overdue") else ""
        out.print(Text(f"Case {case.get('case_id')}: {case.get('state')}{overdue}"))
    table = Table()
    table.add_column("At", no_wrap=True)
    table.add_column("Event", no_wrap=True)
    table.add_column("Detail")
    for event in result.get("events") or []:
        detail = event.get("detail") or {}
        shown = ", ".join(f"{k}={v}" for k, v in detail.items()) if isinstance(detail, dict) else ""
        table.add_row(
            Text(_moment(event.get("at"), seconds=True)), Text(str(event.get("event"))), Text(shown)
        )
    out.print(table)


# --- Formatting ------------------------------------------------------------------------


def _marking(marking: object) -> str:
    if not isinstance(marking, dict):
        return str(marking)
    caveats = marking.get("caveats") or []
    return "/".join([str(marking.get("level")), *map(str, caveats)])
