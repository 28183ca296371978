"""Two Parties' keys and a message factory for the crypto tests."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from accord.crypto import DecryptionKey, MessageDraft, SealedMessage, SigningKey, seal_message

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
BODY = "Прошу оказать содействие в установлении обстоятельств дела № 17/2026.".encode()


@dataclass
class Party:
    party_id: str
    seal: SigningKey = field(default_factory=SigningKey.generate)
    signatory: SigningKey = field(default_factory=SigningKey.generate)
    encryption: DecryptionKey = field(default_factory=DecryptionKey.generate)

    def trusted(self):
        return [self.seal.verify_key(), self.signatory.verify_key()]


@dataclass
class Sent:
    sealed: SealedMessage
    attachments: list[bytes]
    plaintexts: list[bytes]


@pytest.fixture
def party_a() -> Party:
    return Party("МВД-РБ")


@pytest.fixture
def party_b() -> Party:
    return Party("Росгвардия")


@pytest.fixture
def party_c() -> Party:
    return Party("третья-сторона")


def draft(from_: Party, to: Party, **changes) -> MessageDraft:
    values = {
        "message_id": "3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77",
        "sender": from_.party_id,
        "recipient": to.party_id,
        "created": NOW,
        "expires": NOW + timedelta(days=30),
        "marking": {"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        "purpose": "расследование дела № 17/2026",
        "type": "request",
    }
    values.update(changes)
    return MessageDraft(**values)


def send(from_: Party, to: Party, attachments: list[bytes], **changes) -> Sent:
    outs = [io.BytesIO() for _ in attachments]
    sealed = seal_message(
        draft(from_, to, **changes),
        body=BODY,
        attachments=[(io.BytesIO(a), o) for a, o in zip(attachments, outs, strict=True)],
        recipients=[to.encryption.recipient()],
    )
    return Sent(sealed, [o.getvalue() for o in outs], attachments)
