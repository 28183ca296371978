"""`accord demo`: the agreement's exchange end to end, with a readable transcript.

Until the node exists, the demo runs the crypto core as two Parties would use it: keys,
a signed and sealed request with a Cyrillic attachment, verification without the content
key (as an auditor), opening by the recipient, a signed receipt, and a standard `age` tool
decrypting the attachment with the recipient's key when it is installed.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from crypto import (
    DecryptionKey,
    Envelope,
    MessageDraft,
    MessageOpener,
    Receipt,
    SigningKey,
    Verdict,
    issue_receipt,
    new_message_id,
    seal_message,
    verify_message,
    verify_receipt,
)

ATTACHMENT = "Протокол осмотра места происшествия.\n".encode() * 4000
BODY = "Прошу оказать содействие в установлении обстоятельств дела № 17/2026.".encode()


def run(console: Console | None = None) -> None:
    out = console or Console()
    now = datetime.now(UTC)
    a_seal, a_head, b_seal = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    b_enc = DecryptionKey.generate()
    out.print("[bold]Accord demo[/]: Party A (МВД-РБ) sends a request to Party B (Росгвардия)")
    out.print(f"  A seal key      {a_seal.key_id[:16]}…   A head's key {a_head.key_id[:16]}…")
    out.print(f"  B seal key      {b_seal.key_id[:16]}…   B encryption {b_enc.key_id[:16]}…")

    with tempfile.TemporaryDirectory(prefix="accord-demo-") as tmp:
        sealed_path = Path(tmp) / "attachment.age-payload"
        with io.BytesIO(ATTACHMENT) as src, sealed_path.open("wb") as dst:
            sealed = seal_message(
                MessageDraft(
                    message_id=new_message_id(),
                    sender="МВД-РБ",
                    recipient="Росгвардия",
                    created=now,
                    expires=now + timedelta(days=30),
                    marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
                    purpose="расследование дела № 17/2026",
                    type="request",
                ),
                body=BODY,
                attachments=[(src, dst)],
                recipients=[b_enc.recipient()],
            )
        envelope = sealed.sign([a_head, a_seal])
        st = sealed.statement
        out.print(f"1. A seals request {st.message_id}: marking CONFIDENTIAL/ORCON,")
        out.print(f"   body {st.body.size} B and attachment {st.attachments[0].size} B encrypted;")
        out.print("   signed by A's head (art. 4.4) and A's seal.")

        wire = envelope.to_bytes()
        trusted = [a_seal.verify_key(), a_head.verify_key()]
        verified = verify_message(
            Envelope.from_bytes(wire),
            trusted,
            sender="МВД-РБ",
            recipient="Росгвардия",
            now=now,
            required=[a_seal.key_id, a_head.key_id],
        )
        out.print(
            f"2. An auditor verifies both signatures without any content key: "
            f"{len(verified.evidence.key_ids)} trusted signatures, statement "
            f"{verified.evidence.payload_sha256[:16]}…"
        )

        opener = MessageOpener(verified, sealed.header, b_enc)
        body = opener.open_body(sealed.body)
        with sealed_path.open("rb") as src, (Path(tmp) / "attachment.txt").open("wb") as dst:
            opened = opener.open_attachment(0, src, dst)
        assert opened.sha256 == hashlib.sha256(ATTACHMENT).hexdigest()
        out.print(f"3. B opens it: «{body.decode()}»")
        out.print(
            f"   attachment {opened.size} B, sha256 {opened.sha256[:16]}… matches what A sent"
        )

        receipt = issue_receipt(
            Receipt(
                st.message_id,
                "МВД-РБ",
                "Росгвардия",
                envelope.payload_sha256,
                envelope.sha256,
                now,
                Verdict.ACCEPTED,
            ),
            [b_seal],
        )
        verify_receipt(
            Envelope.from_bytes(receipt.to_bytes()),
            [b_seal.verify_key()],
            receiver="Росгвардия",
            message_id=st.message_id,
            statement_sha256=envelope.payload_sha256,
        )
        out.print("4. B answers with a receipt signed by its seal; A verifies it.")

        age = shutil.which("age")
        if age:
            identity = Path(tmp) / "b.identity"
            identity.touch(mode=0o600)
            identity.write_text(b_enc.export_age_identity_unencrypted() + "\n")
            age_file = Path(tmp) / "attachment.age"
            age_file.write_bytes(sealed.header + sealed_path.read_bytes())
            plain = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                [age, "-d", "-i", str(identity), str(age_file)], check=True, capture_output=True
            ).stdout
            assert plain == ATTACHMENT
            out.print("5. The standard `age` tool decrypts the attachment with B's key: identical.")
    out.print("[green]Demo complete.[/]")
