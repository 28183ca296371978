"""The auditors' commands of `accord` (CLI.md "Auditors", "Users: bundle export").

- `accord bundle export ID -o FILE`: the message's evidence bundle from a running node.
- `accord verify BUNDLE --trust DESCRIPTOR...`: offline, with `crypto/` alone: no node, no
  database. Consent tokens are checked by `crypto.bundle.check_consent_token`. Prints
  what was proven in plain words; `--json` prints `{"ok", "proven", "failures",
  "warnings"}`; exit 1 on any failure.
- `accord audit export -o FILE` and `accord audit verify FILE --trust DESCRIPTOR...`: the
  whole log, checked offline by `crypto.auditlog.verify_log_export` (issue 12).
- `accord audit verify --node URL --token TOKEN`: the node recomputes its whole log,
  checks every checkpoint and cosignature, and compares it with the latest checkpoint each
  peer cosigned (a truncation behind it is named); the first inconsistency is named; exit
  1 then.

Exit codes as everywhere: 0 success, 1 refused or failed (one line on stderr), 2 usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from accord.gateway.cli._common import (
    CaOption,
    IdArgument,
    JsonOption,
    NodeOption,
    TokenOption,
    _client_refusals,
    _fail,
    _print_json,
    app,
)
from accord.gateway.client.local import LocalClient

if TYPE_CHECKING:  # imported when a command runs, not for `accord --help`
    from accord.crypto.descriptor import NodeDescriptor

__all__: list[str] = []  # commands register themselves on `gateway.cli.app`

bundle_app = typer.Typer(name="bundle", help="Evidence bundles for auditors.", no_args_is_help=True)
audit_app = typer.Typer(name="audit", help="The node's audit log.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")
app.add_typer(audit_app, name="audit")


@bundle_app.command("export")
def bundle_export(
    message_id: IdArgument,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The file to write the bundle to.", show_default=False),
    ],
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write the evidence bundle of message ID: its signed statement, receipts, the
    originator's consent tokens (and revocations) and forward statements recorded for it
    (art. 7.3), the audit log's entries about it with inclusion proofs, and the cosigned
    checkpoint."""
    with _client_refusals(), LocalClient(node, token, ca) as client:
        data = client.bundle(message_id)
    try:
        output.write_bytes(data)
    except OSError as e:
        _fail(f"cannot write {output}: {e.strerror}. Choose another -o FILE")
    if json_output:
        _print_json({"message_id": message_id, "file": str(output), "bytes": len(data)})
        return
    typer.echo(f"Wrote the evidence bundle of {message_id} to {output} ({len(data)} bytes).")
    typer.echo("Verify it with `accord verify FILE --trust DESCRIPTOR...`.")


def _descriptor(path: Path) -> NodeDescriptor:
    from accord.crypto import Envelope, VerificationError
    from accord.crypto.descriptor import verify_descriptor

    try:
        data = path.read_bytes()
    except OSError as e:
        _fail(f"cannot read the descriptor {path}: {e.strerror}. Check --trust")
    try:
        return verify_descriptor(Envelope.from_bytes(data.strip(b" \t\r\n")))
    except VerificationError as e:
        _fail(f"{path} is not a valid node descriptor ({e.reason}). Ask the Party for it again")


@app.command("verify")
def verify(
    bundle: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="The evidence bundle file.", show_default=False),
    ],
    trust: Annotated[
        list[Path],
        typer.Option(
            "--trust",
            metavar="DESCRIPTOR",
            help="A Party's node descriptor whose fingerprint you compared (repeat it).",
            show_default=False,
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Verify an evidence bundle offline against trusted node descriptors: statement,
    receipts, consent tokens (the originator's own, for this message: art. 7.3), forwards
    and log entries. Pass the descriptors of every Party involved."""
    from accord.crypto.bundle import BundleVerificationError, verify_bundle

    descriptors = [_descriptor(p) for p in trust]
    try:
        data = bundle.read_bytes()
    except OSError as e:
        _fail(f"cannot read {bundle}: {e.strerror}. Check the path of the bundle")
    document: dict[str, Any]
    try:
        evidence = verify_bundle(data, descriptors)
        document = {
            "ok": True,
            "message_id": evidence.message_id,
            "proven": list(evidence.proven),
            "failures": [],
            "warnings": list(evidence.warnings),
        }
    except BundleVerificationError as e:
        document = {
            "ok": False,
            "proven": list(e.proven),
            "failures": list(e.failures),
            "warnings": [],
        }
    if json_output:
        _print_json(document)
    else:
        for line in document["proven"]:
            typer.echo(f"PROVEN   {line}")
        for line in document["warnings"]:
            typer.echo(f"NOTE     {line}")
        for line in document["failures"]:
            typer.echo(f"FAILED   {line}")
    if not document["ok"]:
        first = document["failures"][0] if document["failures"] else "verification failed"
        _fail(f"the bundle does not verify: {first}. Do not rely on it")


@audit_app.command("export")
def audit_export(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The file to write the log to.", show_default=False),
    ],
    node: NodeOption,
    token: TokenOption,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write the node's whole audit log (leaves, checkpoints, cosignatures and the seal
    key changes) for `accord audit verify FILE --trust DESCRIPTOR...` (issue 12)."""
    from accord.gateway.api.local.log_export import export_log

    with _client_refusals(), LocalClient(node, token, ca) as client:
        data = export_log(client)
    try:
        output.write_bytes(data)
    except OSError as e:
        _fail(f"cannot write {output}: {e.strerror}. Choose another -o FILE")
    if json_output:
        _print_json({"file": str(output), "bytes": len(data)})
        return
    typer.echo(f"Wrote the audit log to {output} ({len(data)} bytes).")
    typer.echo("Verify it offline with `accord audit verify FILE --trust DESCRIPTOR...`.")


def _verify_file(path: Path, trust: list[Path], json_output: bool) -> None:
    """`accord audit verify FILE --trust ...`: offline, with `crypto/` alone."""
    from accord.crypto.auditlog import LogVerificationError, verify_log_export

    if not trust:
        raise typer.BadParameter(
            "pass the exporting Party's descriptor (and its peers') with --trust"
        )
    descriptors = [_descriptor(p) for p in trust]
    try:
        data = path.read_bytes()
    except OSError as e:
        _fail(f"cannot read {path}: {e.strerror}. Check the path of the export")
    document: dict[str, Any]
    try:
        evidence = verify_log_export(data, descriptors)
        document = {"ok": True, "party": evidence.party, "size": evidence.size,
                    "proven": list(evidence.proven), "failures": [],
                    "warnings": list(evidence.warnings)}  # fmt: skip
    except LogVerificationError as e:
        document = {"ok": False, "proven": list(e.proven), "failures": list(e.failures),
                    "warnings": []}  # fmt: skip
    if json_output:
        _print_json(document)
    else:
        for line in document["proven"]:
            typer.echo(f"PROVEN   {line}")
        for line in document["warnings"]:
            typer.echo(f"NOTE     {line}")
        for line in document["failures"]:
            typer.echo(f"FAILED   {line}")
    if not document["ok"]:
        _fail(f"the audit log does not verify: {document['failures'][0]}. Do not rely on it")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE",
            help="An export of `accord audit export`, checked offline (with --trust).",
            show_default=False,
        ),
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust",
            metavar="DESCRIPTOR",
            help="With FILE: a Party's node descriptor whose fingerprint you compared.",
            show_default=False,
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            envvar="ACCORD_NODE",
            metavar="URL",
            help="The node's local API URL (or ACCORD_NODE).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="ACCORD_TOKEN",
            metavar="TOKEN",
            help="Your API token (or ACCORD_TOKEN).",
            show_default=False,
        ),
    ] = None,
    ca: CaOption = None,
    json_output: JsonOption = False,
) -> None:
    """Have the node recompute its whole audit log and check every checkpoint and
    cosignature and what its peers cosigned; the first inconsistency is named. With FILE,
    check an export offline against --trust descriptors instead, trusting no node."""
    if file is not None:
        _verify_file(file, trust or [], json_output)
        return
    if node is None or token is None:
        raise typer.BadParameter("give --node URL and --token TOKEN, or an exported FILE")
    with _client_refusals(), LocalClient(node, token, ca) as client:
        report = client.audit_verify()
    if json_output:
        _print_json(report)
    elif report.get("ok"):
        typer.echo(
            f"The audit log of {report.get('party')} verifies: {report.get('size')} entries, "
            f"root {report.get('root')}, {report.get('checkpoints_verified')} signed "
            f"checkpoint(s), {report.get('cosignatures_verified')} cosignature(s)."
        )
    if not json_output:
        # What each peer cosigned (issue 12): a truncation behind it is the problem below.
        for found in report.get("witnesses") or []:
            if found.get("status") == "consistent":
                typer.echo(
                    f"WITNESS  {found.get('party')} cosigned size {found.get('size')}: the log "
                    "still holds it unchanged."
                )
        for line in report.get("warnings") or []:
            typer.echo(f"NOTE     {line}")
    if not report.get("ok"):
        problem = report.get("problem") or {}
        _fail(
            f"the audit log of {report.get('party')} is inconsistent: {problem.get('kind')} "
            f"at {problem.get('index')}: {problem.get('detail')}. Keep the database as it is "
            "and report it"
        )
