"""The node's audit trail: typed events into the Merkle log, signed checkpoints, witnessing
by the peers, proofs, evidence bundles and the whole-log check (DESIGN guarantee 7).

Recording an event is one call, inside the transaction of the change it records::

    audit.record(session, audit.message_event(EventKind.MESSAGE_SENT, node.party, message, now,
                                              user=user.name))

so the change and its log entry commit together or not at all. An event that changes
nothing else (a read, a refusal) is recorded in a transaction of its own (`record_alone`).

Invariants:
- A leaf is `crypto.bundle.LogEvent` canonical JSON: what happened, to which message,
  between whom, which digests and marking, which verdict, when. Never content: no body,
  attachment, key or token enters an event (`LogEvent` has no field for them).
- The node signs a C2SP checkpoint of its log with its seal key (origin and key name
  `crypto.bundle.log_origin(party)`) after `checkpoint_burst` new leaves or when
  `checkpoint_interval` has passed with new leaves (`AuditConfig`); time comes from the
  node's injected clock.
- A cosignature is stored only after it verifies under the witness's trusted seal key,
  over exactly the checkpoint this node signed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlmodel import Session

from accord.crypto import Envelope, VerificationError, VerifyKey, canonical_json
from accord.crypto.bundle import Bundle, LogEntry, LogEvent, log_origin, witness_name
from accord.crypto.checkpoint import (
    Checkpoint,
    Note,
    NoteSignature,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)
from accord.crypto.merkle import consistency_plan, inclusion_plan
from accord.gateway.audit.bundle_consent import consent_evidence
from accord.gateway.audit.bundle_keys import key_change_evidence, peer_key_change_evidence
from accord.gateway.node.runtime import Node, PeerKeys, PeerUnknown
from accord.storage import (
    AuditCheckpoint,
    KeyKind,
    Message,
    NewMessage,
    NotFound,
    StorageError,
    add_checkpoint,
    add_cosignature,
    append_chained,
    audit_verify,
    get_message,
    get_receipt,
    last_cosigned_size,
    latest_checkpoint,
    leaves_for_message,
    list_all_cosignatures,
    list_checkpoints,
    list_cosignatures,
    list_keys,
    tree_head,
    tree_nodes,
)

__all__ = [
    "AuditScheduler",
    "EventKind",
    "ExportError",
    "consistency_proof",
    "event",
    "export_bundle",
    "inclusion_proof",
    "key_event",
    "message_event",
    "record",
    "record_all",
    "record_alone",
    "request_cosignature",
    "seal_export",
    "sign_checkpoint_if_due",
    "verify_log",
]

log = logging.getLogger("accord.audit")


class EventKind(StrEnum):
    """What an audit event records. Later features add their kinds here."""

    MESSAGE_DRAFTED = "message.drafted"
    MESSAGE_SIGNED = "message.signed"
    MESSAGE_SENT = "message.sent"
    MESSAGE_RECEIVED = "message.received"
    MESSAGE_REFUSED = "message.refused"  # this node refused a message a peer delivered
    MESSAGE_READ = "message.read"
    READ_REFUSED = "read.refused"
    SEND_REFUSED = "send.refused"
    RECEIPT_STORED = "receipt.stored"
    DELIVERY_REFUSED = "delivery.refused"  # the peer refused a message of ours
    FORWARDED = "message.forwarded"
    FORWARD_REFUSED = "forward.refused"
    CONSENT_GRANTED = "consent.granted"
    CONSENT_REVOKED = "consent.revoked"
    CONSENT_USED = "consent.used"
    USER_ADDED = "user.added"
    USER_CHANGED = "user.changed"
    KEY_ADDED = "key.added"
    KEY_RETIRED = "key.retired"
    KEY_REVOKED = "key.revoked"
    KEY_ROTATED = "key.rotated"
    PEER_ADDED = "peer.added"
    PEER_UPDATED = "peer.updated"
    PROFILE_CHANGED = "profile.changed"
    WITNESS_FORK = "witness.fork"  # a peer presented a history contradicting one we cosigned
    BUNDLE_EXPORTED = "bundle.exported"
    # Art. 7 (consent, purpose, markings) beyond grant, revoke and use.
    CONSENT_RECEIVED = "consent.received"
    CONSENT_REFUSED = "consent.refused"
    USE_REFUSED = "use.refused"
    MESSAGE_REMARKED = "message.remarked"
    FORWARD_RECEIVED = "forward.received"
    FORWARD_IN_REFUSED = "forward.in-refused"
    # The request workflow (art. 4 to 6, 6.3, 7.4, 13).
    CASE_OPENED = "case.opened"
    CASE_STEP = "case.step"
    CASE_ACCESS_GRANTED = "case.access-granted"
    # Key lifecycle events without a kind of their own above.
    KEY_EVENT = "key.event"


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Building and recording events ------------------------------------------------------


def event(
    kind: EventKind,
    party: str,
    now: datetime,
    *,
    message_id: str | None = None,
    sender: str | None = None,
    recipient: str | None = None,
    peer: str | None = None,
    user: str | None = None,
    digests: Mapping[str, str] | None = None,
    marking: Mapping[str, Any] | None = None,
    verdict: str | None = None,
    detail: Mapping[str, str | int] | None = None,
) -> LogEvent:
    """An event of `party`'s log. Detail texts are cut to 300 characters: reasons, not
    content."""
    return LogEvent(
        kind=str(kind),
        at=now,
        node=party,
        message_id=message_id,
        sender=sender,
        recipient=recipient,
        peer=peer,
        user=user,
        digests=dict(digests or {}),
        marking=None if marking is None else dict(marking),
        verdict=verdict,
        detail={k: _short(v) if isinstance(v, str) else v for k, v in (detail or {}).items()},
    )


def message_event(
    kind: EventKind,
    party: str,
    message: NewMessage | Message,
    now: datetime,
    *,
    envelope: Envelope | None = None,
    user: str | None = None,
    peer: str | None = None,
    verdict: str | None = None,
    digests: Mapping[str, str] | None = None,
    detail: Mapping[str, str | int] | None = None,
) -> LogEvent:
    """An event about a stored message: its id, parties, marking and the digests of its
    signed statement and envelope (pass `envelope` when it is already parsed)."""
    parsed = envelope if envelope is not None else Envelope.from_bytes(message.envelope)
    return event(
        kind,
        party,
        now,
        message_id=message.message_id,
        sender=message.sender,
        recipient=message.recipient,
        peer=peer,
        user=user,
        marking=message.marking,
        verdict=verdict,
        digests={
            "statement": parsed.payload_sha256,
            "envelope": parsed.sha256,
            **(digests or {}),
        },
        detail=detail,
    )


def key_event(
    kind: EventKind,
    party: str,
    now: datetime,
    *,
    key_id: str,
    key_kind: str,
    owner: str,
    user: str | None = None,
    reason: str | None = None,
) -> LogEvent:
    """A key added, retired, revoked or rotated: which key (its id), of whom, of what kind."""
    detail: dict[str, str | int] = {"key_id": key_id, "key_kind": str(key_kind), "owner": owner}
    if reason is not None:
        detail["reason"] = reason
    return event(kind, party, now, user=user, detail=detail)


def _chained(entry: LogEvent) -> Callable[[int | None], bytes]:
    """The leaf of `entry` as a version 2 event, naming the previous event about its
    message (issue 12: a bundle that leaves one out breaks the chain)."""
    return lambda prev: replace(entry, chained=True, prev=prev).to_leaf()


def record(session: Session, entry: LogEvent) -> int:
    """Append `entry` to the log in `session`'s transaction; return its leaf index."""
    return append_chained(session, [(_chained(entry), entry.at, entry.message_id)])[0]


def record_all(session: Session, entries: Iterable[LogEvent]) -> list[int]:
    """Append several events, in order, in `session`'s transaction (one append)."""
    return append_chained(session, [(_chained(e), e.at, e.message_id) for e in entries])


def record_alone(node: Node, entry: LogEvent, *, required: bool = False) -> None:
    """Record an event that changes nothing else (a read, a refusal), in its own
    transaction shared with concurrent writes.

    With `required`, a failure raises `StorageError`: a read is recorded before the
    content is returned, so no one reads without a record. Otherwise (a refusal, which
    is answered anyway) the failure is logged."""
    try:
        node.writes.run(lambda session: record(session, entry))
    except StorageError as e:
        log.error("audit event %s could not be recorded: %s", entry.kind, e)
        if required:
            raise


# --- Proofs -------------------------------------------------------------------------------


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    """The RFC 9162 audit path of leaf `index` in the tree of `size` leaves."""
    plan = inclusion_plan(index, size)
    return plan.assemble(tree_nodes(session, [(n.level, n.index) for n in plan.nodes]))


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """The RFC 9162 proof that the tree of `old_size` leaves is a prefix of `new_size`."""
    plan = consistency_plan(old_size, new_size)
    return plan.assemble(tree_nodes(session, [(n.level, n.index) for n in plan.nodes]))


# --- Checkpoints ------------------------------------------------------------------------


def sign_checkpoint_if_due(node: Node, *, min_new: int = 1) -> AuditCheckpoint | None:
    """Sign and store a checkpoint of the current tree if it has at least `min_new` leaves
    the latest checkpoint lacks; return it, or None when nothing was due."""
    origin = log_origin(node.party)
    with node.db.session() as session:
        head = tree_head(session)
        latest = latest_checkpoint(session)
        done = 0 if latest is None else latest.size
        if head.size == 0 or head.size - done < max(1, min_new):
            return None
        note = sign_checkpoint(Checkpoint(origin, head.size, head.root), origin, node.seal)
        return add_checkpoint(
            session, size=head.size, root_hash=head.root, note=note.decode(), now=node.clock()
        )


def _with_lines(note_text: str, lines: Iterable[str]) -> str:
    """A note with further signature lines (cosignatures) appended."""
    note = parse_note(note_text)
    extra = tuple(NoteSignature.from_line(line) for line in lines)
    return Note(note.text, (*note.signatures, *extra)).to_bytes().decode()


def cosigned_note(session: Session, checkpoint: AuditCheckpoint) -> str:
    """The checkpoint's note with every stored cosignature line."""
    lines = [c.line for c in list_cosignatures(session, checkpoint.size)]
    return _with_lines(checkpoint.note, lines) if lines else checkpoint.note


# --- Witnessing: asking a peer to cosign ------------------------------------------------


class WitnessTransport(Protocol):
    async def post_witness(self, peer: PeerKeys, document: dict[str, Any]) -> tuple[int, Any]: ...


@dataclass(frozen=True)
class _Request:
    checkpoint: AuditCheckpoint
    old_size: int
    proof: list[bytes]


def _prepare(node: Node, party: str, old_size: int | None) -> _Request | None:
    with node.db.session(readonly=True) as session:
        checkpoint = latest_checkpoint(session)
        if checkpoint is None:
            return None
        if any(c.witness == party for c in list_cosignatures(session, checkpoint.size)):
            return None
        old = last_cosigned_size(session, party) if old_size is None else old_size
        if old > checkpoint.size:
            raise VerificationError(
                f"{party} has cosigned our log at size {old}, beyond our {checkpoint.size}"
            )
        return _Request(checkpoint, old, consistency_proof(session, old, checkpoint.size))


def _accept_cosignature(node: Node, peer: PeerKeys, checkpoint: AuditCheckpoint, line: Any) -> None:
    """Verify the witness's line over exactly our checkpoint, then store it."""
    if not isinstance(line, str) or "\n" in line:
        raise VerificationError("the witness answered without a cosignature line")
    note = _with_lines(checkpoint.note, [line])
    name = witness_name(peer.party)
    for key in peer.seals.values():
        try:
            verify_cosignature(note, name, key, origin=log_origin(node.party))
            break
        except VerificationError:
            continue
    else:
        raise VerificationError(f"the cosignature of {peer.party} does not verify")
    with node.db.session() as session:
        add_cosignature(
            session,
            checkpoint_size=checkpoint.size,
            witness=peer.party,
            line=line,
            now=node.clock(),
        )


async def request_cosignature(node: Node, transport: WitnessTransport, peer: PeerKeys) -> bool:
    """Ask `peer` to cosign our latest checkpoint, with a consistency proof from the last
    one it cosigned; store its cosignature. True when the latest checkpoint is cosigned
    by `peer` afterwards (or there is none), False when the peer refused.

    A peer whose record of our log differs (it answers with the size it last cosigned, as
    c2sp.org/tlog-witness does) gets one more request with a proof from that size.
    """
    old_size: int | None = None
    for _ in range(2):
        request = await asyncio.to_thread(_prepare, node, peer.party, old_size)
        if request is None:
            return True
        document = {
            "checkpoint": request.checkpoint.note,
            "old_size": request.old_size,
            "proof": [base64.b64encode(p).decode("ascii") for p in request.proof],
        }
        status, answer = await transport.post_witness(peer, document)
        if status == 200 and isinstance(answer, dict):
            await asyncio.to_thread(
                _accept_cosignature, node, peer, request.checkpoint, answer.get("cosignature")
            )
            return True
        witnessed = answer.get("witnessed_size") if isinstance(answer, dict) else None
        if status == 409 and isinstance(witnessed, int) and not isinstance(witnessed, bool):
            old_size = witnessed
            continue
        log.warning(
            "%s refused to cosign our checkpoint of size %d", peer.party, request.checkpoint.size
        )
        return False
    return False


# --- The schedule -----------------------------------------------------------------------


@dataclass
class AuditScheduler:
    """Signs checkpoints and asks peers to cosign them, on the node's clock.

    `step()` does what is due at `node.clock()`; `run()` calls it every poll interval.
    """

    node: Node
    transport: WitnessTransport
    peers: Callable[[], list[str]]  # the active peers' party ids
    _last_signed: datetime | None = None
    _last_witnessed: dict[str, datetime] = field(default_factory=dict)

    async def step(self) -> AuditCheckpoint | None:
        cfg = self.node.config.audit
        now = self.node.clock()
        interval_passed = self._last_signed is None or now - self._last_signed >= timedelta(
            seconds=cfg.checkpoint_interval
        )
        signed = await asyncio.to_thread(
            sign_checkpoint_if_due,
            self.node,
            min_new=1 if interval_passed else cfg.checkpoint_burst,
        )
        if signed is not None or self._last_signed is None:
            self._last_signed = now
        for party in await asyncio.to_thread(self.peers):
            last = self._last_witnessed.get(party)
            if (
                signed is None
                and last is not None
                and now - last < timedelta(seconds=cfg.witness_interval)
            ):
                continue
            self._last_witnessed[party] = now
            try:
                peer = self.node.peer_keys(party)
                await request_cosignature(self.node, self.transport, peer)
            except (PeerUnknown, VerificationError, StorageError, OSError) as e:
                log.warning("witnessing by %s failed: %s", party, e)
            except Exception as e:  # a peer that is down must not stop the schedule
                log.info("witnessing by %s failed: %s: %s", party, type(e).__name__, e)
        return signed

    async def run(self, stop: asyncio.Event) -> None:
        poll = self.node.config.audit.poll_interval
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                log.exception("audit checkpoint round failed")
            try:
                await asyncio.wait_for(stop.wait(), poll)
            except TimeoutError:
                pass


# --- Evidence bundles ---------------------------------------------------------------------


class ExportError(Exception):
    """No bundle can be made; the message says why and what to do."""


def seal_export(node: Node, message_id: str, *, user: str | None = None) -> int:
    """Record the export of `message_id`'s bundle in the log and sign a checkpoint that
    covers it; return the export entry's index.

    The export entry is the last link of the message's chain of events (issue 12): a
    bundle built up to it holds every entry about the message before it, and an auditor
    finds any left out. Raises `ExportError` when the message is unknown or has no entry.
    """
    with node.db.session() as session:
        try:
            get_message(session, message_id)
        except NotFound as e:
            raise ExportError(f"no message {message_id} on this node") from e
        if not leaves_for_message(session, message_id):
            raise ExportError(
                f"message {message_id} has no audit log entry on this node (it predates the log)"
            )
        exported = event(
            EventKind.BUNDLE_EXPORTED, node.party, node.clock(), message_id=message_id, user=user
        )
        head = record(session, exported)
    sign_checkpoint_if_due(node)
    return head


def export_bundle(
    node: Node, message_id: str, *, user: str | None = None, head: int | None = None
) -> bytes:
    """The evidence bundle of `message_id` (see `crypto.bundle`), as bytes.

    Its log entries are every entry about the message up to the export's own entry
    (`head`, from `seal_export`; recorded now when not given), chained each to the one
    before. They are proven against the checkpoint that covers all of them and has the
    most cosignatures (the newest among equals). Only checkpoints signed by the current
    seal are candidates, so that an auditor holding the current descriptor verifies it;
    what earlier seals signed (the statement, a receipt) is linked to the current seal by
    the key changes the bundle carries (`key_change_evidence`, issue 5).
    """
    if head is None:
        head = seal_export(node, message_id, user=user)
    origin, seal = log_origin(node.party), node.seal.verify_key()

    def current(c: AuditCheckpoint) -> bool:
        try:
            verify_checkpoint(c.note, origin, origin, seal)
        except VerificationError:
            return False
        return True

    needed = head + 1
    with node.db.session(readonly=True) as session:
        try:
            message = get_message(session, message_id)
        except NotFound as e:
            raise ExportError(f"no message {message_id} on this node") from e
        leaves = [leaf for leaf in leaves_for_message(session, message_id) if leaf.index <= head]
        try:
            receipts = [Envelope.from_bytes(get_receipt(session, message_id).envelope)]
        except NotFound:
            receipts = []
        covered = any(current(c) for c in list_checkpoints(session, since=needed, limit=10_000))
    if not covered:
        sign_checkpoint_if_due(node)
    with node.db.session(readonly=True) as session:
        stored = list_checkpoints(session, since=needed, limit=10_000)
        candidates = [c for c in stored if current(c)]
        if not candidates:
            raise ExportError("the audit log could not be checkpointed: ask the admin")
        best = max(candidates, key=lambda c: (len(list_cosignatures(session, c.size)), c.size))
        note = cosigned_note(session, best)
        entries = tuple(
            LogEntry(
                leaf.index, bytes(leaf.leaf), tuple(inclusion_proof(session, leaf.index, best.size))
            )
            for leaf in leaves
        )
        statement = Envelope.from_bytes(message.envelope)
        consents = consent_evidence(session, message_id, statement)
        bundle = Bundle(
            message_id=message_id,
            exported_by=node.party,
            statement=statement,
            receipts=tuple(receipts),
            consent_tokens=consents.tokens,
            checkpoint=note,
            entries=entries,
            revocations=consents.revocations,
            forwards=consents.forwards,
            key_changes=(
                *key_change_evidence(session, node.party),
                # Issue 12: the chains of the other Parties whose signatures it carries.
                *peer_key_change_evidence(session, _signers_of(message, best, session)),
            ),
        )
    return bundle.to_bytes()


def _signers_of(message: Message, checkpoint: AuditCheckpoint, session: Session) -> set[str]:
    """The Parties other than this node whose signatures a bundle of `message` on
    `checkpoint` carries: the sender (statement, consent tokens), the recipient
    (receipts, forward statements) and the witnesses of the checkpoint."""
    witnesses = {c.witness for c in list_cosignatures(session, checkpoint.size)}
    return {message.sender, message.recipient, *witnesses}


# --- The whole-log check ----------------------------------------------------------------


def _keys_of(session: Session, owner: str) -> list[VerifyKey]:
    """Every seal key `owner` ever had (active, retired or revoked: old checkpoints stay
    verifiable after a rotation)."""
    return [
        VerifyKey.from_dict(k.public)
        for k in list_keys(session, owner=owner)
        if k.kind is KeyKind.SEAL
    ]


def verify_log(node: Node) -> dict[str, Any]:
    """Recompute the whole log and check every checkpoint and cosignature.

    1. `storage.audit_verify`: the tree recomputed from the leaf bytes; the first edited,
       deleted, reordered or inserted row, altered subtree hash or checkpoint root.
    2. Every checkpoint's note is signed by one of this node's seal keys, for this log's
       origin, and states the stored size and root.
    3. Every cosignature line verifies under one of its witness's seal keys over exactly
       that checkpoint.
    Stops at the first problem and names it (kind, leaf index or checkpoint, detail).
    """
    origin = log_origin(node.party)
    with node.db.session(readonly=True) as session:
        report = audit_verify(session)
        result: dict[str, Any] = {
            "ok": False,
            "party": node.party,
            "origin": origin,
            "size": report.size,
            "root": None if report.root is None else report.root.hex(),
            "checkpoints_verified": report.checkpoints_verified,
            "cosignatures_verified": 0,
            "problem": None,
        }
        if report.problem is not None:
            p = report.problem
            result["problem"] = {"kind": p.kind.value, "index": p.index, "detail": p.detail}
            return result
        own = _keys_of(session, node.party)
        checkpoints = list_checkpoints(session, limit=10**9)
        for checkpoint in checkpoints:
            problem = _check_note(checkpoint, origin, own)
            if problem is not None:
                result["problem"] = {
                    "kind": "checkpoint",
                    "index": checkpoint.size,
                    "detail": problem,
                }
                return result
        by_size = {c.size: c for c in checkpoints}
        witnesses: dict[str, list[VerifyKey]] = {}
        count = 0
        for cosignature in list_all_cosignatures(session):
            keys = witnesses.setdefault(cosignature.witness, _keys_of(session, cosignature.witness))
            checkpoint = by_size[cosignature.checkpoint_size]
            if not _cosignature_verifies(checkpoint, cosignature.line, cosignature.witness, keys):
                result["problem"] = {
                    "kind": "cosignature",
                    "index": checkpoint.size,
                    "detail": f"the cosignature of {cosignature.witness} on the checkpoint of"
                    f" size {checkpoint.size} does not verify",
                }
                return result
            count += 1
    result["cosignatures_verified"] = count
    result["ok"] = True
    return result


def _check_note(checkpoint: AuditCheckpoint, origin: str, keys: list[VerifyKey]) -> str | None:
    for key in keys:
        try:
            evidence = verify_checkpoint(checkpoint.note, origin, origin, key)
        except VerificationError:
            continue
        signed = evidence.checkpoint
        if signed.size != checkpoint.size or signed.root != checkpoint.root_hash:
            return (
                f"the signed note of the checkpoint of size {checkpoint.size} states another"
                " size or root than the one stored"
            )
        return None
    return f"the checkpoint of size {checkpoint.size} is not signed by this node's seal"


def _cosignature_verifies(
    checkpoint: AuditCheckpoint, line: str, witness: str, keys: list[VerifyKey]
) -> bool:
    try:
        note = _with_lines(checkpoint.note, [line])
    except VerificationError:
        return False
    for key in keys:
        try:
            verify_cosignature(note, witness_name(witness), key)
            return True
        except VerificationError:
            continue
    return False


def flat_detail(detail: Mapping[str, Any]) -> dict[str, str | int]:
    """An event's detail as the log holds it: texts and integers (nested values as their
    canonical JSON), nothing absent."""
    out: dict[str, str | int] = {}
    for key, value in detail.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int):
            out[key] = value
        else:
            out[key] = canonical_json(value).decode("utf-8")
    return out
