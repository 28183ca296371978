"""Consented forwards (agreement art. 7.3; DESIGN guarantee 4), both ends.

The forwarder's node (`accord forward ID --to PARTY`):
 1. The message was received by this node from its originator and is stored whole.
 2. A recorded consent of the originator covers it: this message, this node as forwarder,
    this third party (and the purpose, if one is named), granted, unexpired, not revoked,
    not used. Otherwise the forward is refused (exit 1 with the reason) and audited.
 3. The stored envelope and the token are verified again under the originator's keys.
 4. The consent is reserved (`granted` to `used`, one conditional update) so that it
    covers one forward only, even with several replicas.
 5. The content key is re-wrapped for the third party; the originator's envelope and
    ciphertext parts travel unchanged, with the token and the forwarder's sealed forward
    statement, over mutual TLS to `/peer/v1/forwards`.
 6. The third party's signed receipt must verify; then the forward is recorded. If the
    forward fails, the reservation is released and nothing is recorded as sent.

The third party's node (`/peer/v1/forwards`), before storing anything:
 1. The TLS client certificate is a pinned peer's: the forwarder; same agreement profile.
 2. `crypto.consent.verify_forward`: forward statement sealed by the forwarder; message
    signed by the originator (a trusted peer) for the forwarder; token the originator's,
    unexpired, for this message, forwarder, third party, purpose and marking; the
    re-wrapped key opens with our identity and matches the originator's key commitment.
 3. A request also carries the originator's signatory signature (art. 4.4).
 4. The token's nonce was never accepted here before (a replayed second forward), and the
    message is not already here.
 5. Each part must hash to its signed digest while it streams in.
 6. Message, forward record, token and receipt are stored in one transaction.
Every refusal is the same 403 to the forwarder; the reason goes to this node's log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlmodel import col, select

from accord.crypto import (
    Envelope,
    MessageOpener,
    Receipt,
    Verdict,
    VerificationError,
    issue_receipt,
    verify_receipt,
)
from accord.crypto.canonical import loads_canonical
from accord.crypto.consent import (
    ConsentToken,
    ForwardStatement,
    VerifiedForward,
    sign_forward,
    verify_consent,
    verify_forward,
)
from accord.crypto.sealed import STATEMENT_TYPE, Statement
from accord.crypto.tls import client_context
from accord.gateway.api.local.messages import _verify_stored, current_user
from accord.gateway.consent.control import (
    GRANTED,
    REVOKED,
    USED,
    ConsentRefused,
    _audit_event,
    _mark_used,
    _received_message,
    _require_user,
    _timeline,
    consent_row,
    usable_consent,
)
from accord.gateway.messages.access import NotKnown, known_message
from accord.gateway.messages.parts import message_row, open_part
from accord.gateway.messages.receive import REFUSED, _authenticated_peer, _discard, _store_parts
from accord.gateway.messages.stream import (
    MAX_ENVELOPE,
    MAX_HEADER,
    AsyncByteReader,
    StreamError,
    frame_lengths,
)
from accord.gateway.node.runtime import PROFILE_HEADER, Node, PeerKeys, PeerUnknown
from accord.policy.admission import AdmissionRefused, admit
from accord.storage import (
    ConsentRecord,
    Direction,
    ForwardRecord,
    Message,
    MessagePart,
    StorageError,
    User,
    add_event,
    add_receipt,
    get_message,
    get_parts,
    record_incoming,
)

__all__ = [
    "accept_forward",
    "forward_message",
    "forward_peer_router",
    "forward_router",
    "provenance",
]

log = logging.getLogger("accord.forward")
FORWARD_MAGIC = b"ACCORD-FORWARD/1\n"
READ_CHUNK = 256 * 1024


class _Refused(Exception):
    """A forwarded message is refused; the reason is for the log only."""


@dataclass(frozen=True)
class Forwarded:
    forward_id: str
    message_id: str
    third_party: str
    consent: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "forward_id": self.forward_id,
            "to": self.third_party,
            "consent": self.consent,
            "status": "delivered",
        }


# --- The forwarder's side -----------------------------------------------------------------


Ship = Callable[[Node, "_Prepared"], Awaitable[Any]]


async def forward_message(
    node: Node,
    user: User,
    message_id: str,
    to: str,
    *,
    purpose: str | None = None,
    ship: Ship | None = None,
) -> Forwarded:
    """Forward a received message to a third party under a recorded consent; raise
    `ConsentRefused` with the reason otherwise (the refusal is audited).

    `ship` replaces the HTTPS transport to the third party (tests feed the third party's
    own acceptance code in process)."""
    try:
        _require_user(user)
        await asyncio.to_thread(_require_known, node, user, message_id)
        prepared = await asyncio.to_thread(_prepare, node, message_id, to, purpose)
    except ConsentRefused as e:
        _refused(node, message_id, to, user, str(e))
        raise
    try:
        receipt = _verified_receipt(prepared, await (ship or _ship)(node, prepared))
    except ConsentRefused as e:
        await asyncio.to_thread(_release, node, prepared.record.nonce)
        _refused(node, message_id, to, user, str(e))
        raise
    await asyncio.to_thread(_record_sent, node, prepared, receipt, user)
    _audit_event(
        node,
        "forward-accepted",
        {"message_id": message_id, "to": to, "nonce": prepared.record.nonce, "by": user.name},
    )
    return Forwarded(prepared.forward_id, message_id, to, prepared.record.nonce)


def _require_known(node: Node, user: User, message_id: str) -> None:
    """Only a person with need-to-know of the message (clearance of its governing
    marking, art. 6.3) passes it on; to anyone else it is a message that is not here."""
    try:
        known_message(node, user, message_id)
    except NotKnown as e:
        raise ConsentRefused(str(e), 404) from e


@dataclass(frozen=True)
class _Prepared:
    forward_id: str
    peer: PeerKeys
    record: ConsentRecord
    message: Envelope
    consent: Envelope
    forward: Envelope
    header: bytes
    parts: tuple[MessagePart, ...]


def _prepare(node: Node, message_id: str, to: str, purpose: str | None) -> _Prepared:
    now = node.clock()
    row = _received_message(node, message_id)  # 1
    if row.header is None:
        raise ConsentRefused(f"message {message_id} has no content on this node")
    with node.db.session() as session:
        record = usable_consent(session, node, message_id, to, purpose)  # 2
        if record.third_party == node.party:
            raise ConsentRefused("a consent to use for another purpose does not cover a transfer")
        try:
            peer = node.peer_keys(to)
        except PeerUnknown as e:
            raise ConsentRefused(
                f"{to!r} is not an active peer of this node: onboard it with `accord peer add`"
            ) from e
        try:  # 3
            originator = node.peer_keys(row.sender)
            verified = _verify_stored(node, row)
            token = verify_consent(
                Envelope.from_bytes(record.envelope),
                originator=row.sender,
                seals=originator.seals,
                signatories=originator.signatories,
                signatory_required=node.profile.consent_signatory_required,
                now=now,
            ).token
        except (PeerUnknown, VerificationError) as e:
            raise ConsentRefused(
                f"the recorded consent or message no longer verifies under {row.sender}'s keys "
                f"({e}): ask the originator for a new consent"
            ) from e
        envelope = Envelope.from_bytes(row.envelope)
        if token.statement_sha256 != envelope.payload_sha256:
            raise ConsentRefused("the recorded consent is for another version of the message")
        _mark_used(session, record.nonce, now)  # 4
        parts = tuple(get_parts(session, message_id))
    header = MessageOpener(verified, row.header, node.encryption).rewrap([peer.encryption])  # 5
    consent = Envelope.from_bytes(record.envelope)
    forward_id = str(uuid.uuid4())
    statement = ForwardStatement(
        forward_id=forward_id,
        message_id=message_id,
        statement_sha256=envelope.payload_sha256,
        envelope_sha256=envelope.sha256,
        consent_sha256=consent.sha256,
        header_sha256=hashlib.sha256(header).hexdigest(),
        originator=row.sender,
        forwarder=node.party,
        third_party=to,
        purpose=token.purpose,
        marking=dict(verified.statement.marking),
        created=now,
    )
    return _Prepared(
        forward_id,
        peer,
        record,
        envelope,
        consent,
        sign_forward(statement, [node.seal]),
        header,
        parts,
    )


async def _body(node: Node, p: _Prepared) -> AsyncIterator[bytes]:
    yield FORWARD_MAGIC
    yield frame_lengths(p.forward.to_bytes(), p.consent.to_bytes())
    yield frame_lengths(p.message.to_bytes(), p.header)
    for part in p.parts:
        if part.data is not None:
            yield part.data
            continue
        with open_part(node, part) as f:
            while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
                yield chunk


async def _ship(node: Node, p: _Prepared) -> Any:
    """Step 5: send; return the third party's answer (its receipt document)."""
    context = client_context(node.tls, p.peer.tls_certificate_pem.encode("ascii"))
    timeout = httpx.Timeout(120.0, connect=node.config.delivery.connect_timeout)
    try:
        async with httpx.AsyncClient(
            verify=context, timeout=timeout, base_url=p.peer.endpoint
        ) as client:
            response = await client.post(
                "/peer/v1/forwards",
                content=_body(node, p),
                headers={
                    "content-type": "application/vnd.accord.forward-stream",
                    PROFILE_HEADER: node.profile.digest,
                },
            )
    except httpx.HTTPError as e:
        raise ConsentRefused(
            f"{p.peer.party}'s node could not be reached ({type(e).__name__}): the consent "
            "is kept; try again when it is up"
        ) from e
    if response.status_code != 200:
        raise ConsentRefused(
            f"{p.peer.party}'s node refused the forward (HTTP {response.status_code}); its "
            "log says why. The consent is kept"
        )
    try:
        return response.json().get("receipt")
    except (ValueError, AttributeError) as e:
        raise ConsentRefused(f"{p.peer.party}'s node answered the forward unintelligibly") from e


def _verified_receipt(p: _Prepared, document: Any) -> bytes:
    """Step 6: the third party's receipt, signed by its seal, for exactly this statement."""
    try:
        receipt = Envelope.from_dict(document)
        verify_receipt(
            receipt,
            p.peer.seals,
            receiver=p.peer.party,
            message_id=_message_id(p.message),
            statement_sha256=p.message.payload_sha256,
        )
    except VerificationError as e:
        raise ConsentRefused(
            f"{p.peer.party}'s receipt for the forward does not verify ({e.reason}): the "
            "forward is not counted as delivered"
        ) from e
    return receipt.to_bytes()


def _message_id(envelope: Envelope) -> str:
    return Statement.from_payload(loads_canonical(envelope.payload)).message_id


def _release(node: Node, nonce: str) -> None:
    with node.db.session() as session:
        record = session.get(ConsentRecord, nonce)
        if record is not None and record.status == USED:
            record.status, record.used_at = GRANTED, None
            session.add(record)


def _record_sent(node: Node, p: _Prepared, receipt: bytes, user: User) -> None:
    now = node.clock()
    with node.db.session() as session:
        session.add(
            ForwardRecord(
                forward_id=p.forward_id,
                direction=Direction.OUT,
                message_id=_message_id(p.message),
                consent_nonce=p.record.nonce,
                forwarder=node.party,
                third_party=p.peer.party,
                statement=p.forward.to_bytes(),
                consent=p.consent.to_bytes(),
                header=p.header,
                receipt=receipt,
                created_at=now,
            )
        )
        session.flush()
        add_event(
            session,
            _message_id(p.message),
            "forwarded",
            now=now,
            detail={"to": p.peer.party, "nonce": p.record.nonce, "by": user.name},
        )


def _refused(node: Node, message_id: str, to: str, user: User, reason: str) -> None:
    _audit_event(
        node,
        "forward-refused",
        {"message_id": message_id, "to": to, "by": user.name, "reason": reason},
    )
    _timeline(node, message_id, "forward-refused", {"to": to, "reason": reason})


# --- The third party's side ---------------------------------------------------------------


def forward_peer_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/peer/v1")

    @router.post("/forwards", include_in_schema=False)
    async def accept(request: Request) -> JSONResponse:
        forwarder = _authenticated_peer(node, request)  # 1
        if forwarder is None:
            log.warning("forward refused: client certificate not pinned to any peer")
            return JSONResponse(REFUSED, status_code=403)
        if request.headers.get(PROFILE_HEADER) != node.profile.digest:
            log.warning("forward from %s refused: it runs another agreement profile", forwarder)
            return JSONResponse(REFUSED, status_code=403)
        status, answer = await accept_forward(node, forwarder, AsyncByteReader(request.stream()))
        return JSONResponse(answer, status_code=status)

    return router


async def accept_forward(
    node: Node, forwarder: str, reader: AsyncByteReader
) -> tuple[int, dict[str, Any]]:
    """Steps 2 to 6 for the stream a pinned, same-profile `forwarder` sent: the HTTP
    status and answer. Every refusal is the same 403; the reason goes to the log."""
    try:
        receipt = await _accept(node, forwarder, reader)
    except (_Refused, VerificationError, StreamError, StorageError) as e:
        reason = e.reason if isinstance(e, VerificationError) else str(e)
        log.warning("forward from %s refused: %s", forwarder, reason)
        _audit_event(node, "forward-in-refused", {"forwarder": forwarder, "reason": reason})
        return 403, REFUSED
    return 200, {"verdict": "accepted", "receipt": json.loads(receipt)}


async def _accept(node: Node, forwarder: str, reader: AsyncByteReader) -> bytes:
    if await reader.readexactly(len(FORWARD_MAGIC)) != FORWARD_MAGIC:
        raise StreamError("not a forward stream")
    forward = Envelope.from_bytes(
        await reader.readexactly(await reader.read_u32(MAX_ENVELOPE, "forward"))
    )
    consent = Envelope.from_bytes(
        await reader.readexactly(await reader.read_u32(MAX_ENVELOPE, "consent"))
    )
    message = Envelope.from_bytes(
        await reader.readexactly(await reader.read_u32(MAX_ENVELOPE, "message"))
    )
    header = await reader.readexactly(await reader.read_u32(MAX_HEADER, "header"))
    if message.payload_type != STATEMENT_TYPE:
        raise _Refused("the forwarded envelope is not a message statement")
    # Read only to know who the originator claims to be; verified below.
    originator = Statement.from_payload(loads_canonical(message.payload)).sender
    if originator in (node.party, forwarder):
        raise _Refused("a forward must carry a third Party's message")
    evidence = _verify(node, forwarder, originator, message, consent, forward, header)  # 2, 3
    _check_fresh(node, evidence)  # 4
    parts, created = await _store_parts(node, reader, evidence.message.statement)  # 5
    try:
        return await asyncio.to_thread(
            _record_received, node, forwarder, evidence, message, consent, forward, header, parts
        )  # 6
    except BaseException:
        _discard(node, created)
        raise


def _verify(
    node: Node,
    forwarder: str,
    originator: str,
    message: Envelope,
    consent: Envelope,
    forward: Envelope,
    header: bytes,
) -> VerifiedForward:
    try:
        by = node.peer_keys(forwarder)
        origin = node.peer_keys(originator)
    except PeerUnknown as e:
        raise _Refused(f"{e} is not an active peer here (the originator must be trusted)") from e
    evidence = verify_forward(
        message=message,
        consent=consent,
        forward=forward,
        header=header,
        originator=originator,
        originator_seals=origin.seals,
        originator_signatories=origin.signatories,
        forwarder=forwarder,
        forwarder_seals=by.seals,
        third_party=node.party,
        now=node.clock(),
        signatory_required=node.profile.consent_signatory_required,
        identity=node.encryption,
    )
    st = evidence.message.statement
    try:  # only what this node's profile allows (policy/admission.py)
        admit(node.profile.scheme, st.type, st.marking, st.extensions)
    except AdmissionRefused as e:
        raise _Refused(f"not admitted by the profile: {e}") from e
    if st.type == "request" and not evidence.message.evidence.key_ids & origin.signatories.keys():
        raise _Refused("a request must be signed by the originator's head or deputy (art. 4.4)")
    return evidence


def _check_fresh(node: Node, evidence: VerifiedForward) -> None:
    token = evidence.consent.token
    with node.db.session(readonly=True) as session:
        known = session.get(ConsentRecord, token.nonce)
        if known is not None and known.status == REVOKED:
            raise _Refused(f"consent {token.nonce[:16]} was revoked by its originator")
        if known is not None:
            raise _Refused(f"consent {token.nonce[:16]} was already used for a forward here")
        if session.get(Message, token.message_id) is not None:
            raise _Refused(f"message {token.message_id} is already on this node")


def _record_received(
    node: Node,
    forwarder: str,
    evidence: VerifiedForward,
    message: Envelope,
    consent: Envelope,
    forward: Envelope,
    header: bytes,
    parts: Sequence[Any],
) -> bytes:
    now = node.clock()
    st = evidence.message.statement
    token: ConsentToken = evidence.consent.token
    receipt = issue_receipt(
        Receipt(
            message_id=st.message_id,
            sender=forwarder,
            receiver=node.party,
            statement_sha256=message.payload_sha256,
            envelope_sha256=message.sha256,
            received_at=now,
            verdict=Verdict.ACCEPTED,
        ),
        [node.seal],
    ).to_bytes()
    with node.db.session() as session:
        record_incoming(
            session,
            message_row(st, envelope=message.to_bytes(), header=header, parts=parts),
            now=now,
        )
        session.add(consent_row(token, consent, status=USED, now=now))
        session.add(
            ForwardRecord(
                forward_id=evidence.forward.forward_id,
                direction=Direction.IN,
                message_id=st.message_id,
                consent_nonce=token.nonce,
                forwarder=forwarder,
                third_party=node.party,
                statement=forward.to_bytes(),
                consent=consent.to_bytes(),
                header=header,
                receipt=receipt,
                created_at=now,
            )
        )
        session.flush()
        add_receipt(session, st.message_id, envelope=receipt, verdict="accepted", now=now)
        add_event(
            session,
            st.message_id,
            "forwarded-in",
            now=now,
            detail={"forwarder": forwarder, "nonce": token.nonce, "purpose": token.purpose},
        )
    _audit_event(
        node,
        "forward-in-accepted",
        {"message_id": st.message_id, "forwarder": forwarder, "nonce": token.nonce},
    )
    return receipt


# --- Provenance and the local API ---------------------------------------------------------


def provenance(node: Node, message_id: str) -> dict[str, Any]:
    """Re-verify, from the stored bytes, who signed a message and, for a forwarded one,
    the consent and the forwarder's seal: the third party's proof of origin."""
    with node.db.session(readonly=True) as session:
        try:
            row = get_message(session, message_id)
        except StorageError as e:
            raise ConsentRefused(f"no message {message_id} on this node", 404) from e
        forward = session.exec(
            select(ForwardRecord).where(
                col(ForwardRecord.message_id) == message_id,
                col(ForwardRecord.direction) == Direction.IN,
            )
        ).first()
    try:
        verified = _verify_stored(node, row)
        result: dict[str, Any] = {
            "message_id": message_id,
            "originator": row.sender,
            "signed_by": sorted(verified.evidence.key_ids),
            "statement_sha256": verified.evidence.payload_sha256,
            "marking": dict(verified.statement.marking),
            "purpose": verified.statement.purpose,
            "forwarded": None,
        }
        if forward is not None:
            by = node.peer_keys(forward.forwarder)
            origin = node.peer_keys(row.sender)
            evidence = verify_forward(
                message=Envelope.from_bytes(row.envelope),
                consent=Envelope.from_bytes(forward.consent),
                forward=Envelope.from_bytes(forward.statement),
                header=forward.header,
                originator=row.sender,
                originator_seals=origin.seals,
                originator_signatories=origin.signatories,
                forwarder=forward.forwarder,
                forwarder_seals=by.seals,
                third_party=node.party,
                now=forward.created_at,
                identity=node.encryption,
            )
            token = evidence.consent.token
            result["forwarded"] = {
                "forwarder": forward.forwarder,
                "forwarder_seal": sorted(evidence.forward_evidence.key_ids),
                "consent": {
                    "nonce": token.nonce,
                    "signed_by": sorted(evidence.consent.evidence.key_ids),
                    "purpose": token.purpose,
                    "expires": token.expires.isoformat(),
                },
                "key_commitment": "matches",
            }
    except (VerificationError, PeerUnknown) as e:
        raise ConsentRefused(f"message {message_id} does not verify: {e}", 409) from e
    return result


class ForwardBody(BaseModel):
    to: str
    purpose: str | None = None


CurrentUser = Annotated[User, Depends(current_user)]


def forward_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/messages/{message_id}/forward", status_code=201)
    async def forward(message_id: str, body: ForwardBody, user: CurrentUser) -> dict[str, Any]:
        """Forward a received message to a third party under the originator's consent."""
        try:
            done = await forward_message(node, user, message_id, body.to, purpose=body.purpose)
        except ConsentRefused as e:
            raise HTTPException(e.status, str(e)) from e
        return done.to_dict()

    @router.get("/messages/{message_id}/provenance")
    def proof(message_id: str, user: CurrentUser) -> dict[str, Any]:
        """Who signed the message (and, if forwarded, the consent and the forwarder)."""
        try:  # need-to-know: clearance and art. 6.3; forbidden answers as missing
            known_message(node, user, message_id)
        except NotKnown as e:
            raise HTTPException(404, str(e)) from e
        try:
            return provenance(node, message_id)
        except ConsentRefused as e:
            raise HTTPException(e.status, str(e)) from e

    return router
