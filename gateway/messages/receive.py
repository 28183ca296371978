"""The peer API: other Parties' nodes deliver sealed messages here, over mutual TLS.

Checklist for every delivered message (DESIGN guarantees 1, 5, 6; STYLE "verification"):
 1. The TLS client certificate is pinned in the peer registry: it names the peer.
 2. The envelope parses (canonical DSSE) and is a message statement.
 3. Its signatures verify under that peer's keys: one of its seal keys always, and one of
    its signatory keys for a request (agreement art. 4.4).
 3a. It carries only what this node's profile allows: a carried level (never one above
    the ceiling), known caveats and marking fields, a known type and known extensions
    (`policy.admission`); otherwise it is refused like a bad signature.
 4. The statement's sender is the connected peer (a peer cannot speak for another party),
    its recipient is this node, and it has not expired.
 5. A (sender, message id) already recorded is a redelivery when the envelope is the same,
    answered with the original receipt, and a replay otherwise, refused. For a message
    whose parts all travel inline (small), this is decided for the whole batch by one
    query inside the transaction of step 8, which is authoritative anyway (a concurrent
    delivery may have recorded it since); a message with a part bound for the blob store
    is also checked before its parts are read, so a redelivered large file is skipped,
    not stored again.
 6. Each part streams into the blob store and must hash to its signed digest before it
    becomes visible; a mismatch discards it.
 7. The agreement's workflow: a request carries its art. 4.3 fields, a step on a case
    is one the case allows (a refusal with its reasons, art. 5.3), no new request after
    the agreement ended (art. 13.1) (`_workflow.inspect_delivery`).
 8. Only then is the message recorded (message, parts, replay entry, event, our signed
    receipt, its audit leaf, and the case's step or the consent record it carries; the
    whole batch in one transaction, with one statement per table for plain messages) and
    the receipt returned.
Every refusal looks the same to the peer; the reason goes to this node's log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session

from accord.crypto import (
    Envelope,
    Receipt,
    Verdict,
    VerificationError,
    issue_receipt,
    verify_message,
)
from accord.crypto.bundle import LogEvent
from accord.crypto.canonical import loads_canonical
from accord.crypto.sealed import STATEMENT_TYPE, PartDigest, Statement, VerifiedMessage
from accord.crypto.tls import certificate_fingerprint
from accord.gateway.audit import log as _audit
from accord.gateway.consent.control import (
    CONTROL_TYPES,
    check_incoming_control,
    record_incoming_control,
)
from accord.gateway.messages.parts import INLINE_MAX, message_row
from accord.gateway.messages.stream import (
    MAGIC,
    MAX_ENVELOPE,
    MAX_HEADER,
    AsyncByteReader,
    StreamError,
)
from accord.gateway.node.runtime import PROFILE_HEADER, Node, PeerUnknown
from accord.gateway.node.tls import peer_certificate_der
from accord.gateway.workflow import cases as _workflow
from accord.policy.admission import AdmissionRefused, admit
from accord.policy.workflow import WorkflowError
from accord.storage import (
    Conflict,
    NewMessage,
    PartRef,
    ReplayedMessage,
    ReplayEntry,
    StorageError,
    add_receipt,
    find_peer_by_certificate,
    get_receipt,
    record_incoming,
    record_incoming_many,
)

__all__ = ["peer_router"]

log = logging.getLogger("accord.peer")
REFUSED: dict[str, Any] = {"error": "refused"}


class _Refused(Exception):
    """A delivered message is refused; the reason is for the log only."""


@dataclass
class _Accepted:
    message: NewMessage
    receipt: bytes
    new_blobs: list[str]
    workflow: _workflow.Incoming | None = None


def _authenticated_peer(node: Node, request: Request) -> str | None:
    """Step 1: the party whose pinned certificate opened this connection."""
    der = peer_certificate_der(request.scope)
    if der is None:
        return None
    fingerprint = certificate_fingerprint(der)
    try:
        with node.db.session(readonly=True) as session:
            peer = find_peer_by_certificate(session, fingerprint)
    except StorageError:
        return None
    return peer.party_id


def peer_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/peer/v1")

    @router.post("/messages", include_in_schema=False)
    async def deliver(request: Request) -> JSONResponse:
        party = _authenticated_peer(node, request)
        if party is None:
            log.warning("delivery refused: client certificate not pinned to any peer")
            return JSONResponse(REFUSED, status_code=403)
        if request.headers.get(PROFILE_HEADER) != node.profile.digest:
            log.warning("delivery from %s refused: it runs another agreement profile", party)
            return JSONResponse(REFUSED, status_code=403)
        reader = AsyncByteReader(request.stream())
        try:
            if await reader.readexactly(len(MAGIC)) != MAGIC:
                raise StreamError("not a delivery stream")
        except StreamError as e:
            log.warning("delivery from %s refused: %s", party, e)
            return JSONResponse(REFUSED, status_code=400)
        results: list[dict[str, Any]] = []
        accepted: list[_Accepted] = []
        redelivered: list[str] = []
        refused: list[tuple[str | None, str]] = []
        while True:
            try:
                n = await reader.read_u32(MAX_ENVELOPE, "envelope")
                if n == 0:
                    break
                outcome = await _receive_one(node, party, reader, n)
            except StreamError as e:
                # The stream broke: what was read in full is answered; the sender retries
                # the rest.
                log.warning("delivery stream from %s broke off: %s", party, e)
                break
            if isinstance(outcome, _Accepted):
                accepted.append(outcome)
            elif isinstance(outcome, str):
                redelivered.append(outcome)
            else:
                results.append({"message_id": outcome[0], "verdict": "refused"})
                refused.append((outcome[0], outcome[1]))
        stored = await asyncio.to_thread(_record, node, party, accepted, redelivered, refused)
        results.extend(stored)
        return JSONResponse({"results": results})

    return router


async def _receive_one(
    node: Node, party: str, reader: AsyncByteReader, envelope_size: int
) -> _Accepted | str | tuple[str | None, str]:
    """Read one message off the stream; return it accepted, a redelivered id, or a refusal."""
    envelope_bytes = await reader.readexactly(envelope_size)
    header = await reader.readexactly(await reader.read_u32(MAX_HEADER, "header"))
    try:
        envelope = Envelope.from_bytes(envelope_bytes)  # 2
    except VerificationError as e:
        # Without a parsed statement the part sizes are unknown: the stream cannot go on.
        raise StreamError(f"unparseable envelope: {e.reason}") from e
    statement = _unverified_statement(envelope)
    if statement is None:
        raise StreamError("envelope is not a message statement")
    message_id = statement.message_id
    try:
        verified = _verify(node, party, envelope)  # 3, 4
        check_incoming_control(  # 4a: consent tokens, re-markings (art. 7.1, 7.3)
            node, party, verified.statement, signed_by=verified.evidence.key_ids
        )
        # 5, early, only for a message with a part bound for the blob store.
        inline = all(p.size <= INLINE_MAX for p in statement.parts)
        seen = None if inline else _seen(node, party, message_id)
        if seen is not None and seen != envelope.sha256:
            raise _Refused("replay of a recorded message id with other content")
    except (_Refused, VerificationError) as e:
        _log_refusal(message_id, party, e)
        await _skip(reader, statement.parts)
        return (message_id, _reason(e))
    if seen is not None:
        await _skip(reader, statement.parts)
        return message_id
    try:
        parts, new_blobs = await _store_parts(node, reader, verified.statement)  # 6
    except _Refused as e:
        _log_refusal(message_id, party, e)
        return (message_id, _reason(e))
    try:  # 7
        workflow = await asyncio.to_thread(
            _workflow.inspect_delivery, node, party, verified, header, parts
        )
    except (WorkflowError, VerificationError, StorageError, PeerUnknown) as e:
        _log_refusal(message_id, party, e)
        _discard(node, new_blobs)
        return (message_id, _reason(e))
    now = node.clock()
    receipt = issue_receipt(
        Receipt(
            message_id=message_id,
            sender=party,
            receiver=node.party,
            statement_sha256=envelope.payload_sha256,
            envelope_sha256=envelope.sha256,
            received_at=now,
            verdict=Verdict.ACCEPTED,
        ),
        [node.seal],
    ).to_bytes()
    st = verified.statement
    message = message_row(st, envelope=envelope.to_bytes(), header=header, parts=parts)
    return _Accepted(message, receipt, new_blobs, workflow)


def _unverified_statement(envelope: Envelope) -> Statement | None:
    """The statement's shape, read only to know the part sizes on the wire; nothing from
    it is trusted until `_verify` has run."""
    if envelope.payload_type != STATEMENT_TYPE:
        return None
    try:
        return Statement.from_payload(loads_canonical(envelope.payload))
    except VerificationError:
        return None


def _verify(node: Node, party: str, envelope: Envelope) -> VerifiedMessage:
    try:
        keys = node.peer_keys(party)
    except PeerUnknown as e:
        raise _Refused(f"peer {party} is not active in the registry") from e
    verified = verify_message(
        envelope, keys.verify_keys, sender=party, recipient=node.party, now=node.clock()
    )
    if not verified.evidence.key_ids & keys.seals.keys():
        raise _Refused("no signature by the peer's seal")
    st = verified.statement
    try:  # 3a: only what this node's profile allows (policy/admission.py)
        admit(node.profile.scheme, st.type, st.marking, st.extensions)
    except AdmissionRefused as e:
        raise _Refused(f"not admitted by the profile: {e}") from e
    if (
        verified.statement.type == "request"
        # An urgent oral request is registered under the seal; its written confirmation
        # is what the head or deputy signs (art. 4.2, 4.4; see `_workflow`).
        and verified.statement.extensions.get("urgent_oral") is not True
        and not verified.evidence.key_ids & keys.signatories.keys()
    ):
        raise _Refused("a request must be signed by the peer's head or deputy (art. 4.4)")
    return verified


def _seen(node: Node, party: str, message_id: str) -> str | None:
    with node.db.session(readonly=True) as session:
        entry = session.get(ReplayEntry, (party, message_id))
        return None if entry is None else entry.envelope_sha256


async def _store_parts(
    node: Node, reader: AsyncByteReader, statement: Statement
) -> tuple[list[PartRef], list[str]]:
    """Read each part off the stream; small ones are kept in memory (stored inline with the
    message), large ones stream into the blob store. A part is kept only if it hashes to
    its signed digest. Returns the parts and the blob digests this call newly created (to
    undo on failure). On a mismatch the rest of the message is consumed, so the stream
    stays in step."""
    created: list[str] = []
    refs: list[PartRef] = []
    parts = statement.parts
    try:
        for i, part in enumerate(parts):
            if part.size <= INLINE_MAX:
                data = await reader.readexactly(part.size)
                if hashlib.sha256(data).hexdigest() != part.sha256:
                    await _skip(reader, parts[i + 1 :])
                    raise _Refused("a part does not hash to its signed digest")
                refs.append(PartRef(part.sha256, part.size, data))
                continue
            existed = node.blobs.exists(part.sha256)
            with node.blobs.writer() as writer:
                await reader.copy_exactly(part.size, writer.write)
                try:
                    writer.commit(expected_sha256=part.sha256)
                except StorageError as e:
                    await _skip(reader, parts[i + 1 :])
                    raise _Refused("a part does not hash to its signed digest") from e
            if not existed:
                created.append(part.sha256)
            refs.append(PartRef(part.sha256, part.size))
    except BaseException:
        _discard(node, created)
        raise
    return refs, created


async def _skip(reader: AsyncByteReader, parts: Sequence[PartDigest]) -> None:
    """Consume a refused message's parts so that the next message can be read."""
    for part in parts:
        await reader.skip(part.size)


def _reason(error: Exception) -> str:
    return error.reason if isinstance(error, VerificationError) else str(error)


def _log_refusal(message_id: str, party: str, error: Exception) -> None:
    log.warning("message %s from %s refused: %s", message_id, party, _reason(error))


def _discard(node: Node, digests: list[str]) -> None:
    for digest in digests:
        node.blobs.delete(digest)


def _record(
    node: Node,
    party: str,
    accepted: list[_Accepted],
    redelivered: list[str],
    refused: list[tuple[str | None, str]],
) -> list[dict[str, Any]]:
    """Steps 5 and 8: one transaction for the batch, with the audit leaf of each message
    received (and the receipt answered) and of each refused.

    A plain message is stored by the bulk statements (one per table for all of them),
    whole or not at all, alone if the batch breaks a constraint. A message that moves a
    case or carries a consent statement is stored in its own savepoint with its step, so
    that a step the case no longer allows refuses that message only.
    """
    results: list[dict[str, Any]] = []
    now = node.clock()
    plain = [i for i in accepted if i.workflow is None and i.message.type not in CONTROL_TYPES]
    hooked = [i for i in accepted if i.workflow is not None or i.message.type in CONTROL_TYPES]
    outcomes: Sequence[object] = []
    alone: list[object] = []
    try:
        with node.db.session() as session:
            _audit.record_all(
                session, (_refusal_event(node, party, m, reason, now) for m, reason in refused)
            )
            outcomes = record_incoming_many(
                session,
                [item.message for item in plain],
                receipts=[item.receipt for item in plain],
                now=now,
            )
            _audit.record_all(
                session,
                (
                    _received_event(node, party, item, now)
                    for item, outcome in zip(plain, outcomes, strict=True)
                    if outcome is None
                ),
            )
            alone = [_record_alone(session, node, party, item, now) for item in hooked]
    except StorageError as e:
        log.error("a batch of %d message(s) could not be stored: %s", len(accepted), e)
        outcomes = [e] * len(plain)
        alone = [e] * len(hooked)
    late_refusals: list[tuple[str, str]] = []
    for item, outcome in [*zip(plain, outcomes, strict=True), *zip(hooked, alone, strict=True)]:
        m = item.message
        if outcome is None:  # stored by the bulk statements
            results.append(_accepted(m.message_id, item.receipt))
        elif isinstance(outcome, dict):
            results.append(outcome)
        elif isinstance(outcome, StorageError):
            _discard(node, item.new_blobs)
            if isinstance(outcome, ReplayedMessage):
                if outcome.envelope_sha256 == hashlib.sha256(m.envelope).hexdigest():
                    # Delivered twice in one batch, or by two requests at once: answer
                    # with the receipt that was stored first.
                    redelivered.append(m.message_id)
                else:
                    _log_refusal(m.message_id, m.sender, _Refused("replay with other content"))
                    late_refusals.append((m.message_id, "replay with other content"))
                    results.append({"message_id": m.message_id, "verdict": "refused"})
            elif isinstance(outcome, Conflict):
                _log_refusal(m.message_id, m.sender, _Refused(str(outcome)))
                late_refusals.append((m.message_id, str(outcome)))
                results.append({"message_id": m.message_id, "verdict": "refused"})
            else:
                log.error("message %s could not be stored: %s", m.message_id, outcome)
                results.append({"message_id": m.message_id, "verdict": "retry"})
    for message_id, reason in late_refusals:
        _audit.record_alone(node, _refusal_event(node, party, message_id, reason, now))
    if redelivered:
        with node.db.session(readonly=True) as session:
            for message_id in redelivered:
                try:
                    receipt = get_receipt(session, message_id)
                    results.append(_accepted(message_id, receipt.envelope))
                except StorageError:
                    results.append({"message_id": message_id, "verdict": "retry"})
    return results


def _record_alone(
    session: Session, node: Node, party: str, item: _Accepted, now: datetime
) -> dict[str, Any] | StorageError:
    """Step 8 for a message with a hook: in a savepoint, the message, its receipt, the
    consent record or case step it carries and its audit leaf; the answer for it."""
    m = item.message
    try:
        with session.begin_nested():
            record_incoming(session, m, now=now)
            record_incoming_control(session, node, m)
            add_receipt(session, m.message_id, envelope=item.receipt, verdict="accepted", now=now)
            if item.workflow is not None:  # the case moves with the message
                _workflow.record_incoming_step(
                    session,
                    item.workflow,
                    message_id=m.message_id,
                    now=now,
                    periods=_workflow.periods_of(node),
                )
            _audit.record(session, _received_event(node, party, item, now))
    except WorkflowError as e:
        # The case changed since the step was inspected (another message of the batch,
        # or of a concurrent delivery, moved it): refused like any other.
        _log_refusal(m.message_id, m.sender, e)
        _discard(node, item.new_blobs)
        _audit.record(session, _refusal_event(node, party, m.message_id, _reason(e), now))
        return {"message_id": m.message_id, "verdict": "refused"}
    except StorageError as e:
        return e
    return _accepted(m.message_id, item.receipt)


def _received_event(node: Node, party: str, item: _Accepted, now: datetime) -> LogEvent:
    return _audit.message_event(
        _audit.EventKind.MESSAGE_RECEIVED,
        node.party,
        item.message,
        now,
        peer=party,
        verdict="accepted",
        digests={"receipt": hashlib.sha256(item.receipt).hexdigest()},
    )


def _refusal_event(
    node: Node, party: str, message_id: str | None, reason: str, now: datetime
) -> LogEvent:
    return _audit.event(
        _audit.EventKind.MESSAGE_REFUSED,
        node.party,
        now,
        message_id=message_id,
        sender=party,
        peer=party,
        verdict="refused",
        detail={"reason": reason},
    )


def _accepted(message_id: str, receipt: bytes) -> dict[str, Any]:
    return {"message_id": message_id, "verdict": "accepted", "receipt": json.loads(receipt)}
