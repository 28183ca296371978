"""Generate Accord's committed test vectors, deterministically, from fixed seeds.

    python -m tests.vectors.generate          # rewrite tests/vectors/*.json
    python -m tests.vectors.generate --check  # exit 1 if the committed files drifted

Every key, nonce and file key comes from a SHAKE-256 stream over a named seed, and Ed25519
signatures are deterministic, so the same code always writes the same bytes. A change to
the wire format shows up as drift, on purpose: regenerate, review the diff, commit it.
The private keys here are published test keys; they protect nothing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from accord.crypto import (
    DecryptionKey,
    Envelope,
    MessageDraft,
    Receipt,
    SigningKey,
    Verdict,
    canonical_json,
    issue_receipt,
    seal_message,
    sign_envelope,
)

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
TEST_TYPE = "application/vnd.accord.test+json; version=1"


def stream(seed: str) -> Callable[[int], bytes]:
    """A deterministic byte source: SHAKE-256 over the seed and a counter."""
    counter = 0

    def take(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(f"{seed}/{counter}".encode()).digest(n)

    return take


def signing_key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"accord-vectors/ed25519/{name}".encode()).digest())


def decryption_key(name: str) -> DecryptionKey:
    return DecryptionKey(hashlib.sha256(f"accord-vectors/x25519/{name}".encode()).digest())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


A_SEAL, A_SIGNATORY, B_SEAL = (
    signing_key("a-seal"),
    signing_key("a-signatory"),
    signing_key("b-seal"),
)
C_SEAL = signing_key("c-seal")
B_ENC, C_ENC = decryption_key("b-encryption"), decryption_key("c-encryption")


def envelope_cases() -> list[dict[str, Any]]:
    payload = {"запрос": "о содействии", "n": 1}
    good = sign_envelope(TEST_TYPE, payload, [A_SIGNATORY, A_SEAL])
    trusted = [A_SEAL.verify_key().to_dict(), A_SIGNATORY.verify_key().to_dict()]
    required = [A_SEAL.key_id, A_SIGNATORY.key_id]

    def case(
        name: str, env: Envelope | dict[str, Any], expect: str, why: str, **kw: Any
    ) -> dict[str, Any]:
        doc = env.to_dict() if isinstance(env, Envelope) else env
        return {
            "name": name,
            "description": why,
            "envelope": doc,
            "payload_type": kw.get("payload_type", TEST_TYPE),
            "trusted": kw.get("trusted", trusted),
            "required": kw.get("required", required),
            "expect": expect,
        }

    tampered = good.to_dict()
    tampered["payload"] = b64(canonical_json({"запрос": "о содействии", "n": 2}))
    stripped = good.to_dict()
    stripped["signatures"] = stripped["signatures"][1:]
    foreign = sign_envelope(TEST_TYPE, payload, [C_SEAL, A_SEAL])
    return [
        case(
            "envelope_valid_two_signatures.json",
            good,
            "valid",
            "signatory and seal over the payload",
        ),
        case(
            "envelope_valid_with_untrusted_extra_signature.json",
            foreign,
            "valid",
            "a signature by an unknown key is ignored, not counted",
            required=[A_SEAL.key_id],
        ),
        case(
            "envelope_payload_tampered.json", tampered, "invalid", "payload changed after signing"
        ),
        case("envelope_signatory_stripped.json", stripped, "invalid", "required signatory removed"),
        case(
            "envelope_payload_type_confused.json",
            good,
            "invalid",
            "an envelope of one type presented as another",
            payload_type="application/vnd.accord.receipt+json; version=1",
        ),
        case(
            "envelope_wrong_trusted_key.json",
            good,
            "invalid",
            "verifier trusts another party's key",
            trusted=[C_SEAL.verify_key().to_dict()],
            required=[],
        ),
    ]


def message_cases() -> list[dict[str, Any]]:
    rng = stream("message")
    attachment = "Приложение: протокол осмотра.\n".encode() * 3000  # about 1.3 chunks
    draft = MessageDraft(
        message_id="0f6f4e5e-6a53-4a2f-9c59-0d7a3b8e1c11",
        sender="МВД-РБ",
        recipient="Росгвардия",
        created=NOW,
        expires=NOW + timedelta(days=30),
        marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        purpose="расследование дела № 17/2026",
        type="request",
    )
    out = io.BytesIO()
    sealed = seal_message(
        draft,
        body="Прошу оказать содействие.".encode(),
        attachments=[(io.BytesIO(attachment), out)],
        recipients=[B_ENC.recipient()],
        rng=rng,
    )
    env = sealed.sign([A_SIGNATORY, A_SEAL])
    att = out.getvalue()

    def case(name: str, why: str, expect: str, **changes: Any) -> dict[str, Any]:
        c = {
            "name": name,
            "description": why,
            "sender": "МВД-РБ",
            "recipient": "Росгвардия",
            "now": "2026-11-26T00:00:00Z",
            "trusted": [A_SEAL.verify_key().to_dict(), A_SIGNATORY.verify_key().to_dict()],
            "required": [A_SEAL.key_id, A_SIGNATORY.key_id],
            "identity": B_ENC.export_age_identity_unencrypted(),
            "envelope": env.to_dict(),
            "header": b64(sealed.header),
            "body": b64(sealed.body),
            "attachments": [b64(att)],
            "expect": expect,
            "plaintext_sha256": [
                hashlib.sha256("Прошу оказать содействие.".encode()).hexdigest(),
                hashlib.sha256(attachment).hexdigest(),
            ],
        }
        c.update(changes)
        return c

    relabelled = env.to_dict()
    payload = sealed.statement.to_payload()
    payload["marking"] = {"level": "OFFICIAL", "caveats": []}
    relabelled["payload"] = b64(canonical_json(payload))
    flipped = bytearray(att)
    flipped[70_000] ^= 0x01
    return [
        case("message_valid.json", "signed request with one attachment, opened by B", "valid"),
        case(
            "message_label_downgraded.json",
            "marking lowered after signing",
            "invalid",
            envelope=relabelled,
        ),
        case(
            "message_expired.json",
            "presented after its expiry",
            "invalid",
            now="2026-12-26T00:00:00Z",
        ),
        case(
            "message_recipient_mismatch.json",
            "presented to a node it is not for",
            "invalid",
            recipient="третья-сторона",
        ),
        case(
            "message_wrong_identity.json",
            "opened with another node's key",
            "invalid",
            identity=C_ENC.export_age_identity_unencrypted(),
        ),
        case(
            "message_attachment_bit_flipped.json",
            "one bit of the second chunk flipped",
            "invalid",
            attachments=[b64(bytes(flipped))],
        ),
        case(
            "message_attachment_truncated.json",
            "final chunk cut off",
            "invalid",
            attachments=[b64(att[: 16 + 65536 + 16])],
        ),
        case(
            "message_attachment_trailing_data.json",
            "a byte after the final chunk",
            "invalid",
            attachments=[b64(att + b"\x00")],
        ),
        case(
            "message_seal_missing.json",
            "only the signatory signed",
            "invalid",
            envelope=dict(env.to_dict(), signatures=env.to_dict()["signatures"][:1]),
        ),
    ]


def receipt_cases() -> list[dict[str, Any]]:
    r = Receipt(
        message_id="0f6f4e5e-6a53-4a2f-9c59-0d7a3b8e1c11",
        sender="МВД-РБ",
        receiver="Росгвардия",
        statement_sha256=hashlib.sha256(b"statement").hexdigest(),
        envelope_sha256=hashlib.sha256(b"envelope").hexdigest(),
        received_at=NOW,
        verdict=Verdict.ACCEPTED,
    )
    good = issue_receipt(r, [B_SEAL])
    by_sender = issue_receipt(r, [A_SEAL])
    base = {
        "receiver": "Росгвардия",
        "message_id": r.message_id,
        "statement_sha256": r.statement_sha256,
        "trusted": [B_SEAL.verify_key().to_dict()],
    }
    return [
        dict(
            base,
            name="receipt_valid.json",
            description="B's seal over the receipt",
            envelope=good.to_dict(),
            expect="valid",
        ),
        dict(
            base,
            name="receipt_forged_by_sender.json",
            description="the sender signed its own receipt",
            envelope=by_sender.to_dict(),
            expect="invalid",
        ),
        dict(
            base,
            name="receipt_other_statement.json",
            description="receipt for another statement",
            envelope=good.to_dict(),
            expect="invalid",
            statement_sha256="0" * 64,
        ),
    ]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rotation_cases() -> list[dict[str, Any]]:
    """Rotation and revocation statements of A, checked against A's key history at `now`
    (crypto.rotation; docs/protocol.md "Key-change statements")."""
    from accord.crypto.rotation import RevocationStatement, RotatedKind, RotationStatement

    old, new, other = signing_key("a-seal-1"), signing_key("a-seal-2"), signing_key("mallory")
    week = timedelta(days=7)

    def history(revoked_at: datetime | None = None) -> list[dict[str, Any]]:
        return [
            {
                "key": old.verify_key().to_dict(),
                "not_before": _time(NOW - timedelta(days=365)),
                "not_after": None,
                "revoked_at": _time(revoked_at),
            },
            {
                "key": other.verify_key().to_dict(),
                "not_before": _time(NOW - timedelta(days=365)),
                "not_after": _time(NOW - timedelta(days=300)),
                "revoked_at": None,
            },
        ]

    rotation = RotationStatement(
        party="МВД-РБ",
        kind=RotatedKind.SEAL,
        old_key_id=old.key_id,
        new_key=new.verify_key().to_dict(),
        effective=NOW,
        overlap_until=NOW + week,
        issued=NOW,
    )
    good = rotation.sign(old, new)
    base = {"party": "МВД-РБ", "now": _time(NOW), "history": history(), "statement": "rotation"}
    revocation = RevocationStatement("МВД-РБ", other.key_id, NOW, "ключ утерян", NOW)
    return [
        dict(base, name="rotation_valid_seal.json", expect="valid",
             description="signed by the old seal and the new one", envelope=good.to_dict()),
        dict(base, name="rotation_without_proof_of_possession.json", expect="invalid",
             description="the new seal did not sign",
             envelope=Envelope(good.payload_type, good.payload, good.signatures[:1]).to_dict()),
        dict(base, name="rotation_signed_by_revoked_key.json", expect="invalid",
             description="the old seal was revoked an hour before the statement",
             history=history(revoked_at=NOW - timedelta(hours=1)), envelope=good.to_dict()),
        dict(base, name="rotation_forged_by_retired_key.json", expect="invalid",
             description="signed by a seal whose overlap window ended long ago",
             envelope=sign_envelope(good.payload_type, good.payload, [other, new]).to_dict()),
        dict(base, name="rotation_other_party.json", expect="invalid",
             description="A's statement presented as another Party's", party="Росгвардия",
             envelope=good.to_dict()),
        dict(base, name="rotation_revocation_signed_by_the_revoked_key.json",
             expect="invalid", statement="revocation",
             description="a key cannot revoke itself: another current seal signs",
             envelope=sign_envelope(
                 "application/vnd.accord.key-revocation+json; version=1",
                 revocation.to_payload(), [other],
             ).to_dict()),
        dict(base, name="rotation_revocation_valid.json", expect="valid",
             statement="revocation", description="A's current seal revokes a retired key",
             envelope=revocation.sign(old).to_dict()),
    ]  # fmt: skip


def auditevent_cases() -> list[dict[str, Any]]:
    """Audit log leaves (crypto.bundle.LogEvent; docs/protocol.md "Audit log"): version 1,
    and version 2 whose events about a message name the previous one (`prev`, issue 12)."""
    from accord.crypto.bundle import LogEvent
    from accord.crypto.canonical import dumps

    message = "0f6f4e5e-6a53-4a2f-9c59-0d7a3b8e1c11"
    sent = LogEvent("message.sent", NOW, "МВД-РБ", message_id=message, user="Глава",
                    digests={"statement": hashlib.sha256(b"statement").hexdigest()})  # fmt: skip
    first = sent.to_leaf().decode()
    chained = LogEvent("message.read", NOW, "МВД-РБ", message_id=message, user="Оператор",
                       chained=True, prev=41)  # fmt: skip
    leaf = chained.to_leaf().decode()
    head = LogEvent("message.sent", NOW, "МВД-РБ", message_id=message, chained=True)
    other = LogEvent("user.added", NOW, "МВД-РБ", user="Аудитор", chained=True)
    return [
        dict(name="auditevent_v1_valid.json", expect="valid", prev=None, chained=False,
             description="first format: no chain", leaf=first),
        dict(name="auditevent_v2_chained_valid.json", expect="valid", prev=41, chained=True,
             description="names the previous event about its message, at index 41", leaf=leaf),
        dict(name="auditevent_v2_first_of_message_valid.json", expect="valid", prev=None,
             chained=True, description="the first event about its message: no prev",
             leaf=head.to_leaf().decode()),
        dict(name="auditevent_v2_about_no_message_valid.json", expect="valid", prev=None,
             chained=True, description="an event about no message", leaf=other.to_leaf().decode()),
        dict(name="auditevent_prev_in_v1.json", expect="invalid",
             description="a first-format event cannot name a predecessor",
             leaf=leaf.replace('"v":2', '"v":1')),
        dict(name="auditevent_prev_without_message.json", expect="invalid",
             description="prev on an event about no message",
             leaf=dumps({**other.to_payload(), "prev": 3}).decode()),
        dict(name="auditevent_prev_negative.json", expect="invalid",
             description="prev is an index, never negative", leaf=leaf.replace(":41", ":-1")),
        dict(name="auditevent_version_3.json", expect="invalid",
             description="an unknown version", leaf=leaf.replace('"v":2', '"v":3')),
    ]  # fmt: skip


def render() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for group in (
        envelope_cases(),
        message_cases(),
        receipt_cases(),
        rotation_cases(),
        auditevent_cases(),
    ):
        for c in group:
            files[c["name"]] = (
                json.dumps(c, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
            ).encode()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on drift instead of writing")
    args = parser.parse_args(argv)
    files = render()
    existing = {p.name for p in HERE.glob("*.json")}
    if args.check:
        drift = sorted(
            n
            for n, data in files.items()
            if not (HERE / n).exists() or (HERE / n).read_bytes() != data
        ) + sorted(existing - set(files))
        if drift:
            print("test vectors drifted from the generator: " + ", ".join(drift), file=sys.stderr)
            print(
                "run `python -m tests.vectors.generate`, review the diff, commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{len(files)} test vectors match the generator")
        return 0
    for stale in existing - set(files):
        (HERE / stale).unlink()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} test vectors to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
