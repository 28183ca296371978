"""Builders shared by the storage tests: a fixed clock and Cyrillic sample data."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from accord.storage import NewMessage, PartRef, Peer, PeerStatus, add_peer

T0 = datetime(2025, 11, 25, 9, 30, 15, 123456, tzinfo=UTC)
OUR_PARTY = "RU-MVD"
PEER_PARTY = "BY-MVD"
PEER_NAME = "Министерство внутренних дел Республики Беларусь"
PURPOSE = "Проверка сведений в отношении лица по запросу (статья 4 Соглашения)"
MARKING = {"level": "ДСП", "caveats": ["originator-controlled"], "purpose": PURPOSE}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def at(seconds: float) -> datetime:
    """The fixed clock, `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def descriptor_of(party_id: str, name: str) -> str:
    return f'{{"party":"{party_id}","name":"{name}"}}'


def register_peer(session: Session, party_id: str = PEER_PARTY, name: str = PEER_NAME) -> Peer:
    return add_peer(
        session,
        party_id=party_id,
        name=name,
        endpoint_url=f"https://{party_id.lower()}.example:8443",
        tls_cert_sha256=digest(f"certificate of {party_id}".encode()),
        descriptor=descriptor_of(party_id, name),
        status=PeerStatus.ACTIVE,
        now=T0,
    )


def new_message(
    message_id: str,
    *,
    sender: str = OUR_PARTY,
    recipient: str = PEER_PARTY,
    envelope: bytes | None = None,
    parts: int = 2,
    expires: datetime | None = None,
    in_reply_to: str | None = None,
) -> NewMessage:
    return NewMessage(
        message_id=message_id,
        sender=sender,
        recipient=recipient,
        type="request",
        marking=MARKING,
        purpose=PURPOSE,
        created=T0,
        envelope=envelope if envelope is not None else f"envelope {message_id}".encode(),
        header=b"age-encryption.org/v1\n-> X25519 ...\n--- mac\n",
        expires=expires,
        in_reply_to=in_reply_to,
        parts=[
            PartRef(digest(f"{message_id} part {i}".encode()), 1000 * i + 1) for i in range(parts)
        ],
    )
