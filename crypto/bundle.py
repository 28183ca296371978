"""Evidence bundles: one file an auditor verifies offline, with `crypto/` alone.

A bundle gathers what a node can prove about one message (DESIGN guarantees 1, 5, 7;
agreement art. 4.4, 7.3): the signed statement, the signed receipt(s), consent tokens,
the audit log's entries about the message with their inclusion proofs, and the signed,
cosigned checkpoint those proofs lead to. It holds digests and signatures, never content:
the statement names its encrypted parts by their SHA-256 only.

It also defines the audit log's leaf format (`LogEvent`): the node writes leaves with it
and the verifier reads them with it, so both sides agree by construction.

Invariants:
- A bundle is canonical JSON (RFC 8785) with exactly the fields below; anything else, or
  the same content in any other byte form, is refused. Every byte is either covered by a
  signature or a Merkle proof, or checked against something that is: the message id
  against the statement, the exporting party against the checkpoint's origin, the index
  of a log entry by its inclusion proof. One byte changed anywhere fails verification,
  but in a cosignature's witness name (see below).
- Every signature present must be by a trusted key and verify: a signature line or a
  DSSE signature of an unknown key is a failure here, not ignored, since a bundle is a
  closed piece of evidence. One exception (issue 12): a checkpoint cosignature under the
  witness name of a Party the auditor did not pass is reported as a warning and counts
  for nothing, as do key changes of such a Party; the bilateral check stands without it.
- Several descriptors of one Party are accepted when the bundle's key changes link their
  seals; the newest is the trust root (`_one_descriptor_each`).
- Trust comes only from the node descriptors the auditor passes (`--trust`), whose
  fingerprints the auditor compared out of band, and from the key changes that link a
  Party's earlier seals to its descriptor's seal (`crypto.rotation.trace_seal_chain`):
  an earlier seal counts only for a signature dated inside its validity interval, and
  every key change in the bundle must be a link some trusted chain used.
- A consent token proves consent only when signed by the originator (the statement's
  sender) and no one else, for this message's id and statement digest
  (`check_consent_token`, art. 7.3); a revocation only when sealed by the originator, of
  a token in the bundle; a forward statement only when sealed by the forwarder, under a
  token in the bundle that names the same forwarder, third party and purpose.
- A bundle holds every log entry about its message up to its export (issue 12): each
  version 2 event about a message names the previous one about it (`LogEvent.prev`), the
  export's own entry ends the chain, and a receipt the log records as stored must be in
  the bundle. A bundle of first-format (unchained) entries verifies with a warning that
  completeness is not proven.
- `verify_bundle` raises `BundleVerificationError` (a `VerificationError`) listing every
  failure, and returns `BundleEvidence` (the plain-words list of what was proven) only
  when nothing failed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._wire import (
    format_time,
    is_version,
    parse_hex64,
    parse_ident,
    parse_int,
    parse_time,
    require_keys,
)
from .canonical import dumps, loads_canonical
from .checkpoint import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    note_key_id,
    parse_note,
    verify_checkpoint,
    verify_cosignature,
)
from .consent import (
    FORWARD_TYPE,
    ConsentToken,
    ForwardStatement,
    verify_consent_offline,
    verify_revocation,
)
from .descriptor import NodeDescriptor
from .envelope import Envelope, verify_envelope
from .errors import VerificationError
from .keys import VerifyKey
from .merkle import leaf_hash, verify_inclusion
from .receipts import RECEIPT_TYPE, Receipt, Verdict
from .rotation import KeyChange, RotatedKind, RotationStatement, SealChain, trace_seal_chain
from .sealed import STATEMENT_TYPE, Statement

__all__ = [
    "BUNDLE_TYPE",
    "LOG_EVENT_TYPE",
    "Bundle",
    "BundleEvidence",
    "BundleVerificationError",
    "ConsentProof",
    "ConsentVerifier",
    "LogEntry",
    "LogEvent",
    "check_consent_token",
    "log_origin",
    "verify_bundle",
    "witness_name",
]

BUNDLE_TYPE = "application/vnd.accord.evidence-bundle+json; version=1"
LOG_EVENT_TYPE = "accord.audit-event/v1"
# The event kinds the completeness check reads (the node's `EventKind` has the same).
EXPORT_EVENT = "bundle.exported"
RECEIPT_STORED_EVENT = "receipt.stored"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_DETAIL_TEXT = 500
_HASH_SIZE = 32


# --- Names of logs and witnesses ---------------------------------------------------------


def _escape(party: str) -> str:
    """A party id as a note key name: no '+', no space (signed-note, "Format")."""
    out: list[str] = []
    for c in party:
        if c in "%+" or c.isspace():
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
        else:
            out.append(c)
    return "".join(out)


def log_origin(party: str) -> str:
    """The origin line of `party`'s audit log checkpoints, also its log key's name."""
    return f"accord-audit:{_escape(party)}"


def witness_name(party: str) -> str:
    """The name under which `party`'s node cosigns its peers' checkpoints."""
    return f"{_WITNESS_PREFIX}{_escape(party)}"


_WITNESS_PREFIX = "accord-witness:"


def _witness_party(name: str) -> str | None:
    """The party a witness key name stands for (the inverse of `witness_name`), or None
    when the name is not a witness's."""
    if not name.startswith(_WITNESS_PREFIX):
        return None
    try:
        party = urllib.parse.unquote(name[len(_WITNESS_PREFIX) :], errors="strict")
    except UnicodeDecodeError:
        return None
    return party if witness_name(party) == name else None


# --- The leaf format ---------------------------------------------------------------------


def _parse_detail(value: Any) -> dict[str, str | int]:
    if not isinstance(value, dict):
        raise VerificationError("event detail must be an object")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise VerificationError(f"event detail {k!r} must be text or an integer")
        if isinstance(v, str) and len(v) > MAX_DETAIL_TEXT:
            raise VerificationError(f"event detail {k!r} is longer than {MAX_DETAIL_TEXT}")
    return dict(value)


@dataclass(frozen=True)
class LogEvent:
    """One audit event: what happened, to which message, between whom, never content.

    `node` is the party whose log holds it; `digests` names signed bytes by their SHA-256
    (the statement, the envelope, a receipt, a checkpoint note); `marking` is the copy of
    the signed marking; `detail` holds short reason codes and counts.
    """

    kind: str
    at: datetime
    node: str
    message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    peer: str | None = None
    user: str | None = None
    digests: Mapping[str, str] = field(default_factory=dict)
    marking: Mapping[str, Any] | None = None
    verdict: str | None = None
    detail: Mapping[str, str | int] = field(default_factory=dict)
    # Version 2 (issue 12): `chained` events about a message name the index of the
    # previous event about the same message in this log (`prev`), absent for its first.
    chained: bool = False
    prev: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind or len(self.kind) > 64:
            raise ValueError("an event kind is 1 to 64 characters")
        if self.at.tzinfo is None:
            raise ValueError("an event time must be timezone-aware")
        if self.prev is not None and (
            not self.chained
            or self.message_id is None
            or isinstance(self.prev, bool)
            or not isinstance(self.prev, int)
            or self.prev < 0
        ):
            raise ValueError("prev is the index of an earlier event of a chained message event")
        for name, value in self.digests.items():
            parse_hex64(value, f"digest {name}")
        _parse_detail(dict(self.detail))

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "v": 2 if self.chained else 1,
            "type": LOG_EVENT_TYPE,
            "kind": self.kind,
            "at": format_time(self.at),
            "node": self.node,
        }
        optional = {
            "message_id": self.message_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "peer": self.peer,
            "user": self.user,
            "marking": None if self.marking is None else dict(self.marking),
            "verdict": self.verdict,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        if self.digests:
            payload["digests"] = dict(self.digests)
        if self.detail:
            payload["detail"] = dict(self.detail)
        if self.prev is not None:
            payload["prev"] = self.prev
        return payload

    def to_leaf(self) -> bytes:
        """The leaf bytes: canonical JSON, the form the log hashes."""
        return dumps(self.to_payload())

    @classmethod
    def from_leaf(cls, leaf: bytes) -> LogEvent:
        """Parse leaf bytes strictly (canonical JSON, known fields); raise `VerificationError`."""
        data = require_keys(
            loads_canonical(leaf),
            {"v", "type", "kind", "at", "node"},
            {"message_id", "sender", "recipient", "peer", "user", "digests", "marking", "verdict",
             "detail", "prev"},
            "audit event",
        )  # fmt: skip
        known = is_version(data["v"], 1) or is_version(data["v"], 2)
        if not known or data["type"] != LOG_EVENT_TYPE:
            raise VerificationError("not an audit event of version 1 or 2")
        # One byte form per event, as `to_payload` writes it: an optional field is absent,
        # never null, and digests and detail are absent rather than empty.
        if None in data.values() or data.get("digests") == {} or data.get("detail") == {}:
            raise VerificationError("audit event has a null or empty optional field")
        chained = is_version(data["v"], 2)
        prev = None
        if "prev" in data:
            if not chained or data.get("message_id") is None:
                raise VerificationError("only a version 2 event about a message names prev")
            prev = parse_int(data["prev"], "audit event prev")
        if not isinstance(data["kind"], str) or not 0 < len(data["kind"]) <= 64:
            raise VerificationError("audit event kind must be 1 to 64 characters")
        digests = data.get("digests", {})
        if not isinstance(digests, dict):
            raise VerificationError("audit event digests must be an object")
        marking = data.get("marking")
        if marking is not None and not isinstance(marking, dict):
            raise VerificationError("audit event marking must be an object")
        texts = {}
        for name in ("message_id", "sender", "recipient", "peer", "user", "verdict"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise VerificationError(f"audit event {name} must be text")
            texts[name] = value
        try:
            return cls(
                kind=data["kind"],
                at=parse_time(data["at"], "audit event time"),
                node=parse_ident(data["node"], "audit event node"),
                digests={k: parse_hex64(v, f"digest {k}") for k, v in digests.items()},
                marking=marking,
                detail=_parse_detail(data.get("detail", {})),
                chained=chained,
                prev=prev,
                **texts,
            )
        except ValueError as e:
            raise VerificationError(f"audit event is invalid: {e}") from e


# --- The bundle --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} must be base64 text")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise VerificationError(f"{what} is not valid base64") from e
    if _b64(data) != value:
        raise VerificationError(f"{what} is not canonical base64")
    return data


@dataclass(frozen=True)
class LogEntry:
    """A leaf of the exporting node's log, at `index`, with its audit path to the
    checkpoint's root."""

    index: int
    leaf: bytes
    proof: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "leaf": _b64(self.leaf),
            "proof": [_b64(p) for p in self.proof],
        }

    @classmethod
    def from_dict(cls, data: Any) -> LogEntry:
        data = require_keys(data, {"index", "leaf", "proof"}, set(), "log entry")
        if not isinstance(data["proof"], list) or len(data["proof"]) > 64:
            raise VerificationError("a log entry's proof is a list of at most 64 hashes")
        proof = tuple(_unb64(p, "proof hash") for p in data["proof"])
        if any(len(p) != _HASH_SIZE for p in proof):
            raise VerificationError("a proof hash is 32 bytes")
        return cls(parse_int(data["index"], "log entry index"), _unb64(data["leaf"], "leaf"), proof)


@dataclass(frozen=True)
class Bundle:
    """The evidence about one message, as exported by the node of `exported_by`.

    `consent_tokens` holds the originator's consent tokens for the message (art. 7.3),
    checked by `check_consent_token` unless `verify_bundle` is given another verifier;
    `revocations` the originator's signed revocations of some of them; `forwards` the
    forwarders' sealed forward statements of transfers made under them; `key_changes`
    the rotation and revocation statements that link the seals which signed the contents
    to the seals of the descriptors an auditor trusts (issue 5, history). The last three
    are written only when not empty, so a bundle without them is byte for byte a bundle
    of the first form.
    """

    message_id: str
    exported_by: str
    statement: Envelope
    receipts: tuple[Envelope, ...]
    consent_tokens: tuple[Envelope, ...]
    checkpoint: str
    entries: tuple[LogEntry, ...]
    revocations: tuple[Envelope, ...] = ()
    forwards: tuple[Envelope, ...] = ()
    key_changes: tuple[KeyChange, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": BUNDLE_TYPE,
            "message_id": self.message_id,
            "exported_by": self.exported_by,
            "statement": self.statement.to_dict(),
            "receipts": [r.to_dict() for r in self.receipts],
            "consent_tokens": [c.to_dict() for c in self.consent_tokens],
            "log": {
                "checkpoint": self.checkpoint,
                "entries": [e.to_dict() for e in self.entries],
            },
        }
        if self.revocations:
            payload["consent_revocations"] = [r.to_dict() for r in self.revocations]
        if self.forwards:
            payload["forwards"] = [f.to_dict() for f in self.forwards]
        if self.key_changes:
            payload["key_changes"] = [k.to_dict() for k in self.key_changes]
        return payload

    def to_bytes(self) -> bytes:
        return dumps(self.to_payload())

    @classmethod
    def from_bytes(cls, data: bytes) -> Bundle:
        """Parse a bundle: canonical JSON with exactly the known fields, or
        `VerificationError`."""
        if not isinstance(data, bytes) or len(data) > MAX_BUNDLE_BYTES:
            raise VerificationError(f"a bundle is at most {MAX_BUNDLE_BYTES} bytes")
        document = require_keys(
            loads_canonical(data),
            {"type", "message_id", "exported_by", "statement", "receipts", "consent_tokens",
             "log"},
            {"consent_revocations", "forwards", "key_changes"},
            "bundle",
        )  # fmt: skip
        if document["type"] != BUNDLE_TYPE:
            raise VerificationError("not an Accord evidence bundle of version 1")
        log = require_keys(document["log"], {"checkpoint", "entries"}, set(), "bundle log")
        for name in ("receipts", "consent_tokens"):
            if not isinstance(document[name], list) or len(document[name]) > 64:
                raise VerificationError(f"bundle {name} must be a list of at most 64")
        for name in ("consent_revocations", "forwards", "key_changes"):
            value = document.get(name)
            if name in document and (not isinstance(value, list) or not 0 < len(value) <= 64):
                raise VerificationError(f"bundle {name} is absent or a list of 1 to 64")
        if not isinstance(log["entries"], list) or len(log["entries"]) > 10_000:
            raise VerificationError("bundle log entries must be a list of at most 10000")
        if not isinstance(log["checkpoint"], str):
            raise VerificationError("bundle checkpoint must be a signed note")
        return cls(
            message_id=parse_ident(document["message_id"], "message_id"),
            exported_by=parse_ident(document["exported_by"], "exported_by"),
            statement=Envelope.from_dict(document["statement"]),
            receipts=tuple(Envelope.from_dict(r) for r in document["receipts"]),
            consent_tokens=tuple(Envelope.from_dict(c) for c in document["consent_tokens"]),
            checkpoint=log["checkpoint"],
            entries=tuple(LogEntry.from_dict(e) for e in log["entries"]),
            revocations=tuple(
                Envelope.from_dict(r) for r in document.get("consent_revocations", [])
            ),
            forwards=tuple(Envelope.from_dict(f) for f in document.get("forwards", [])),
            key_changes=tuple(KeyChange.from_dict(k) for k in document.get("key_changes", [])),
        )


# --- Verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentProof:
    """A consent token that verified: the token, its envelope's digest (what a forward
    statement binds), and one sentence saying what it proves."""

    token: ConsentToken
    envelope_sha256: str
    words: str


# A consent token checker: given a token, the verified statement's envelope, the statement
# and the trusted descriptors by party, it raises `VerificationError` or returns the proof.
# `check_consent_token` is the default.
ConsentVerifier = Callable[
    [Envelope, Envelope, Statement, Mapping[str, NodeDescriptor]], ConsentProof
]


@dataclass(frozen=True)
class BundleEvidence:
    """What a bundle proved, in plain words, and what it could not show (`warnings`)."""

    message_id: str
    proven: tuple[str, ...]
    warnings: tuple[str, ...]
    checkpoint: Checkpoint | None


class BundleVerificationError(VerificationError):
    """The bundle failed; `failures` lists each problem, `proven` what held anyway."""

    def __init__(self, failures: Sequence[str], proven: Sequence[str]) -> None:
        super().__init__("; ".join(failures))
        self.failures = tuple(failures)
        self.proven = tuple(proven)


def _marking_words(marking: Mapping[str, Any]) -> str:
    level = str(marking.get("level", "?"))
    caveats = marking.get("caveats") or []
    return "/".join([level, *map(str, caveats)]) if isinstance(caveats, list) else level


@dataclass
class _Check:
    proven: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Each trusted Party's seals over time, traced from its descriptor's seal back through
    # the bundle's key changes (`crypto.rotation.trace_seal_chain`).
    chains: dict[str, SealChain] = field(default_factory=dict)

    def seals(self, party: str, descriptor: NodeDescriptor) -> dict[str, VerifyKey]:
        """Every seal of `party` the chain trusts for some interval, the current one too."""
        chain = self.chains.get(party)
        seals = {descriptor.seal.key_id: descriptor.seal}
        if chain is not None:
            seals.update({k.key_id: k.key for k in chain.history.keys})
        return seals

    def seal_refusal(self, party: str, key_id: str, moment: datetime) -> str | None:
        """Why an earlier seal of `party` could not sign at `moment`, or None when it could
        (the descriptor's own seal is trusted as the auditor passed it)."""
        chain = self.chains.get(party)
        if chain is None or key_id == chain.current:
            return None
        return chain.seal_at(key_id, moment)


def _signers(
    descriptors: Mapping[str, NodeDescriptor], check: _Check
) -> dict[str, tuple[VerifyKey, str]]:
    """Every trusted statement key, by DSSE key id, with words naming its holder."""
    keys: dict[str, tuple[VerifyKey, str]] = {}
    for party, d in descriptors.items():
        for key_id, key in check.seals(party, d).items():
            keys[key_id] = (key, f"the earlier seal {key_id[:16]}… of {party}")
        keys[d.seal.key_id] = (d.seal, f"the seal of {party}")
        for s in d.signatories:
            keys[s.key.key_id] = (s.key, f"{s.name} ({s.role}) of {party}")
    return keys


def _claimed_sender(envelope: Envelope) -> str | None:
    """The sender an unverified statement names, only to word a failure."""
    try:
        payload = loads_canonical(envelope.payload)
    except VerificationError:
        return None
    sender = payload.get("sender") if isinstance(payload, dict) else None
    return sender if isinstance(sender, str) else None


def _check_statement(
    bundle: Bundle, descriptors: Mapping[str, NodeDescriptor], check: _Check
) -> Statement | None:
    """1. The statement: every signature by a trusted key of its sender and valid; the
    sender's seal among them, and a signatory for a request (art. 4.4)."""
    envelope = bundle.statement
    keys = _signers(descriptors, check)
    try:
        evidence = verify_envelope(
            envelope, {k: v for k, (v, _) in keys.items()}, payload_type=STATEMENT_TYPE
        )
        statement = Statement.from_payload(evidence.statement)
    except VerificationError as e:
        claimed = _claimed_sender(envelope)
        if claimed is not None and claimed not in descriptors:
            check.failures.append(
                f"the sender {claimed} is not trusted: pass its descriptor with --trust"
            )
        else:
            check.failures.append(f"the statement does not verify: {e.reason}")
        return None
    if statement.message_id != bundle.message_id:
        check.failures.append("the bundle names another message than its statement")
        return None
    sender = descriptors.get(statement.sender)
    if sender is None:
        check.failures.append(
            f"the sender {statement.sender} is not trusted: pass its descriptor with --trust"
        )
        return None
    unknown = {s.keyid for s in envelope.signatures} - evidence.key_ids
    seals = set(check.seals(statement.sender, sender))
    own = seals | {s.key.key_id for s in sender.signatories}
    if unknown or not evidence.key_ids <= own:
        check.failures.append(
            "the statement carries a signature by a key that is not its sender's trusted key"
        )
        return None
    sealed = sorted(evidence.key_ids & seals)
    if not sealed:
        check.failures.append(f"the statement is not sealed by {statement.sender}")
        return None
    for key_id in sealed:
        why = check.seal_refusal(statement.sender, key_id, statement.created)
        if why is not None:
            check.failures.append(f"the statement does not verify: {why}")
            return None
    signatories = sorted(keys[k][1] for k in evidence.key_ids if k not in seals)
    if statement.type == "request" and not signatories:
        check.failures.append(
            "the request is not signed by a head or deputy of its sender (art. 4.4)"
        )
        return None
    by = " and ".join([*(keys[k][1] for k in sealed), *signatories])
    check.proven.append(
        f"Message {statement.message_id} ({statement.type}) was signed by {by}: "
        f"sent by {statement.sender} to {statement.recipient} on "
        f"{format_time(statement.created)}, marked {_marking_words(statement.marking)}, "
        f"for the purpose «{statement.purpose}»."
    )
    parts = ", ".join(p.sha256[:16] for p in statement.parts)
    check.proven.append(
        f"Its content is {len(statement.parts)} encrypted part(s), bound by their SHA-256 "
        f"digests ({parts}…); the bundle holds no content."
    )
    return statement


def _claimed_receiver(envelope: Envelope) -> str | None:
    """The receiver an unverified receipt names, only to choose the key to check it with."""
    try:
        payload = loads_canonical(envelope.payload)
    except VerificationError:
        return None
    receiver = payload.get("receiver") if isinstance(payload, dict) else None
    return receiver if isinstance(receiver, str) else None


def _check_receipts(
    bundle: Bundle,
    statement: Statement,
    descriptors: Mapping[str, NodeDescriptor],
    forwards: Sequence[ForwardStatement],
    check: _Check,
) -> None:
    """2. Each receipt: sealed by the recipient (or by the third party of a verified
    forward, naming the forwarder as sender), for this message, binding this statement."""
    senders = {statement.recipient: statement.sender}
    senders.update({f.third_party: f.forwarder for f in forwards})
    payload_sha256 = bundle.statement.payload_sha256
    for envelope in bundle.receipts:
        claimed = _claimed_receiver(envelope) or statement.recipient
        receiver = descriptors.get(claimed)
        if claimed not in senders:
            check.failures.append(
                "a receipt does not verify: it is for another message or from another party"
            )
            continue
        if receiver is None:
            check.failures.append(f"the recipient {claimed} is not trusted: pass its descriptor")
            continue
        try:
            evidence = verify_envelope(
                envelope, check.seals(claimed, receiver), payload_type=RECEIPT_TYPE
            )
            if len(envelope.signatures) != 1:
                raise VerificationError("a receipt carries the receiver's seal alone")
            receipt = Receipt.from_payload(evidence.statement)
            (seal,) = evidence.key_ids
            why = check.seal_refusal(claimed, seal, receipt.received_at)
            if why is not None:
                raise VerificationError(why)
            if receipt.receiver != claimed or receipt.message_id != statement.message_id:
                raise VerificationError("it is for another message or from another party")
            if receipt.sender != senders[claimed]:
                raise VerificationError("it names another sender")
            if receipt.statement_sha256 != payload_sha256:
                raise VerificationError("it does not bind this statement")
        except VerificationError as e:
            check.failures.append(f"a receipt does not verify: {e.reason}")
            continue
        verdict = "accepted" if receipt.verdict is Verdict.ACCEPTED else "refused"
        source = "" if claimed == statement.recipient else f" from {receipt.sender}"
        check.proven.append(
            f"{claimed} signed a receipt: it received message {statement.message_id}"
            f"{source} on {format_time(receipt.received_at)} and {verdict} it."
        )
    if not bundle.receipts:
        check.warnings.append(f"No receipt of {statement.recipient} is in the bundle.")


def _keys_of(descriptor: NodeDescriptor) -> tuple[dict[str, VerifyKey], dict[str, VerifyKey]]:
    seals = {descriptor.seal.key_id: descriptor.seal}
    return seals, {s.key.key_id: s.key for s in descriptor.signatories}


def check_consent_token(
    envelope: Envelope,
    statement_envelope: Envelope,
    statement: Statement,
    descriptors: Mapping[str, NodeDescriptor],
    *,
    chains: Mapping[str, SealChain] | None = None,
) -> ConsentProof:
    """The default consent verifier of evidence bundles (art. 7.3), offline.

    The token must be signed by the originator of the message (the sender of the bundle's
    statement, whose descriptor is trusted) and by no one else, name that originator, and
    bind this message: its id and its signed statement's SHA-256
    (`crypto.consent.verify_consent_offline`). Its expiry is stated, not enforced: a token
    used before it expired remains evidence afterwards. With `chains` (the originator's
    seals traced through the bundle's key changes), an earlier seal counts for a token
    issued inside its validity interval. Raises `VerificationError`.
    """
    originator = descriptors.get(statement.sender)
    if originator is None:
        raise VerificationError(f"the originator {statement.sender} is not trusted")
    seals, signatories = _keys_of(originator)
    chain = (chains or {}).get(statement.sender)
    if chain is not None:
        seals |= {k.key_id: k.key for k in chain.history.keys}
    verified = verify_consent_offline(
        envelope,
        originator=statement.sender,
        message_id=statement.message_id,
        statement_sha256=statement_envelope.payload_sha256,
        seals=seals,
        signatories=signatories,
    )
    token = verified.token
    earlier = sorted(verified.evidence.key_ids & seals.keys() - {originator.seal.key_id})
    for key_id in earlier:
        why = None if chain is None else chain.seal_at(key_id, token.issued)
        if why is not None:
            raise VerificationError(why)
    current = originator.seal.key_id in verified.evidence.key_ids
    by = " and ".join(
        [
            *([f"the seal of {token.originator}"] if current else []),
            *(f"the earlier seal {k[:16]}… of {token.originator}" for k in earlier),
            *sorted(
                f"{s.name} ({s.role})"
                for s in originator.signatories
                if s.key.key_id in verified.evidence.key_ids
            ),
        ]
    )
    if token.is_use_consent:
        what = (
            f"{token.forwarder} may use the content of message {token.message_id} for "
            f"the purpose «{token.purpose}» (art. 7.2)"
        )
    else:
        what = (
            f"{token.forwarder} may pass message {token.message_id} to the third party "
            f"{token.third_party} for the purpose «{token.purpose}» (art. 7.3)"
        )
    words = (
        f"Consent {token.nonce[:16]}… was signed by {by} on {format_time(token.issued)}: "
        f"{what}, marked {_marking_words(token.marking)}, valid until "
        f"{format_time(token.expires)}."
    )
    return ConsentProof(token, envelope.sha256, words)


def _check_consent(
    bundle: Bundle,
    statement: Statement,
    descriptors: Mapping[str, NodeDescriptor],
    consent: ConsentVerifier,
    check: _Check,
) -> list[ForwardStatement]:
    """3. Consent tokens (art. 7.3) by `consent`; revocations sealed by the originator,
    each of a token in the bundle; forward statements sealed by their forwarder, each
    made under a token in the bundle that covers it. Returns the verified forwards."""
    proofs: dict[str, ConsentProof] = {}
    if consent is check_consent_token:
        consent = functools.partial(check_consent_token, chains=check.chains)
    for token in bundle.consent_tokens:
        try:
            proof = consent(token, bundle.statement, statement, descriptors)
        except VerificationError as e:
            check.failures.append(f"a consent token does not verify: {e.reason}")
            continue
        if proof.token.nonce in proofs:
            check.failures.append(f"consent {proof.token.nonce[:16]}… appears twice")
            continue
        proofs[proof.token.nonce] = proof
        check.proven.append(proof.words)
    originator = descriptors.get(statement.sender)
    revoked: dict[str, datetime] = {}
    for envelope in bundle.revocations:
        try:
            if originator is None:
                raise VerificationError(f"the originator {statement.sender} is not trusted")
            if len(envelope.signatures) != 1:
                raise VerificationError("a revocation carries the originator's seal alone")
            revocation = verify_revocation(
                envelope,
                originator=statement.sender,
                seals=check.seals(statement.sender, originator),
            )
            why = check.seal_refusal(
                statement.sender, envelope.signatures[0].keyid, revocation.revoked
            )
            if why is not None:
                raise VerificationError(why)
            if revocation.nonce not in proofs or revocation.nonce in revoked:
                raise VerificationError("it names no consent token of this bundle, or twice")
        except VerificationError as e:
            check.failures.append(f"a consent revocation does not verify: {e.reason}")
            continue
        revoked[revocation.nonce] = revocation.revoked
        check.proven.append(
            f"{statement.sender} revoked consent {revocation.nonce[:16]}… on "
            f"{format_time(revocation.revoked)}: from then on it permits nothing."
        )
    by_envelope = {p.envelope_sha256: p for p in proofs.values()}
    forwards: list[ForwardStatement] = []
    for envelope in bundle.forwards:
        try:
            forward = _check_forward(envelope, bundle, statement, descriptors, by_envelope, check)
        except VerificationError as e:
            check.failures.append(f"a forward statement does not verify: {e.reason}")
            continue
        forwards.append(forward)
        nonce = by_envelope[forward.consent_sha256].token.nonce
        check.proven.append(
            f"{forward.forwarder} sealed that it passed message {forward.message_id} "
            f"(unchanged: the originator's statement and signatures) to {forward.third_party} "
            f"on {format_time(forward.created)} for the purpose «{forward.purpose}», under "
            f"consent {nonce[:16]}…."
        )
        if nonce in revoked and revoked[nonce] <= forward.created:
            check.warnings.append(
                f"The forward of {forward.forwarder} is dated after the revocation of consent "
                f"{nonce[:16]}…: compare both Parties' logs."
            )
        if forward.created >= proofs[nonce].token.expires:
            check.warnings.append(
                f"The forward of {forward.forwarder} is dated after consent {nonce[:16]}… "
                "expired: compare both Parties' logs."
            )
    return forwards


def _check_forward(
    envelope: Envelope,
    bundle: Bundle,
    statement: Statement,
    descriptors: Mapping[str, NodeDescriptor],
    consents: Mapping[str, ConsentProof],
    check: _Check,
) -> ForwardStatement:
    """A forward statement: sealed by the forwarder alone (the Party that received the
    message), binding this statement and envelope and a consent token of the bundle
    whose forwarder, third party and purpose it matches, with the signed marking."""
    forwarder = descriptors.get(statement.recipient)
    if forwarder is None:
        raise VerificationError(f"the forwarder {statement.recipient} is not trusted")
    if len(envelope.signatures) != 1:
        raise VerificationError("a forward statement carries the forwarder's seal alone")
    evidence = verify_envelope(
        envelope, check.seals(statement.recipient, forwarder), payload_type=FORWARD_TYPE
    )
    forward = ForwardStatement.from_payload(evidence.statement)
    why = check.seal_refusal(statement.recipient, envelope.signatures[0].keyid, forward.created)
    if why is not None:
        raise VerificationError(why)
    if forward.forwarder != statement.recipient or forward.originator != statement.sender:
        raise VerificationError("it names another forwarder or originator than the message")
    if (
        forward.message_id != statement.message_id
        or forward.statement_sha256 != bundle.statement.payload_sha256
        or forward.envelope_sha256 != bundle.statement.sha256
    ):
        raise VerificationError("it is for another message")
    proof = consents.get(forward.consent_sha256)
    if proof is None:
        raise VerificationError("it was made under a consent token that is not in the bundle")
    token = proof.token
    if (token.forwarder, token.third_party, token.purpose) != (
        forward.forwarder,
        forward.third_party,
        forward.purpose,
    ):
        raise VerificationError("its consent token names another forwarder, third party or purpose")
    if dict(forward.marking) != dict(statement.marking):
        raise VerificationError("it declares another marking than the originator signed")
    return forward


def _check_log(
    bundle: Bundle, descriptors: Mapping[str, NodeDescriptor], check: _Check
) -> Checkpoint | None:
    """4. The checkpoint: signed by the exporter's seal as its log key; every other line a
    cosignature of a trusted witness that verifies. 5. Each entry: a log event about this
    message, included in that checkpoint's tree."""
    exporter = descriptors.get(bundle.exported_by)
    if exporter is None:
        check.failures.append(
            f"the exporting node {bundle.exported_by} is not trusted: pass its descriptor"
        )
        return None
    origin = log_origin(bundle.exported_by)
    log_seal = exporter.seal
    try:
        note = parse_note(bundle.checkpoint)
        # A checkpoint carries no date, so an earlier seal of the exporter's chain counts
        # only if it was never revoked (a node signs with its old seal until every peer
        # heard of the rotation).
        chain = check.chains.get(bundle.exported_by)
        earlier = {
            note_key_id(origin, ED25519, k.key): k.key
            for k in (chain.history.keys if chain is not None else ())
            if k.key_id != exporter.seal.key_id and k.revoked_at is None
        }
        signed = [earlier[line.key_id] for line in note.signatures if line.key_id in earlier]
        if signed and note_key_id(origin, ED25519, exporter.seal) not in {
            line.key_id for line in note.signatures
        }:
            log_seal = signed[0]
        evidence = verify_checkpoint(bundle.checkpoint, origin, origin, log_seal)
    except VerificationError as e:
        check.failures.append(f"the log checkpoint does not verify: {e.reason}")
        return None
    checkpoint = evidence.checkpoint
    by = "its seal" if log_seal is exporter.seal else f"its earlier seal {log_seal.key_id[:16]}…"
    check.proven.append(
        f"{bundle.exported_by}'s audit log had {checkpoint.size} entries with root "
        f"{checkpoint.root.hex()[:16]}…, as {by} signed in checkpoint {origin}."
    )
    if log_seal is not exporter.seal:
        check.warnings.append(
            f"The checkpoint is signed by {bundle.exported_by}'s earlier seal "
            f"{log_seal.key_id[:16]}…, rotated out and never revoked; a checkpoint has no "
            "date: export again once the node signs with its current seal."
        )
    # A witness's earlier seals too (its chain in the bundle's key changes), each for a
    # cosignature dated inside the seal's validity interval.
    witnesses = {
        (witness_name(p), note_key_id(witness_name(p), COSIGNATURE_V1, key)): (p, key)
        for p, d in descriptors.items()
        if p != bundle.exported_by
        for key in check.seals(p, d).values()
    }
    log_key = (origin, note_key_id(origin, ED25519, log_seal))
    cosigned = []
    for line in note.signatures:
        if (line.name, line.key_id) == log_key:
            continue
        witness = witnesses.get((line.name, line.key_id))
        stranger = _witness_party(line.name)
        if witness is None and stranger is not None and stranger not in descriptors:
            # Not a failure of the bilateral check (issue 12): the auditor did not pass
            # this Party's descriptor, so its cosignature is neither checked nor counted.
            check.warnings.append(
                f"The checkpoint is also cosigned by {stranger}, whose descriptor was not "
                "passed (--trust): that cosignature was not checked and counts for nothing."
            )
            continue
        if witness is None:
            check.failures.append(f"the checkpoint has a signature by an unknown key {line.name}")
            continue
        party, key = witness
        try:
            cosignature = verify_cosignature(bundle.checkpoint, line.name, key, origin=origin)
            why = check.seal_refusal(party, key.key_id, cosignature.signed_at)
            if why is not None:
                raise VerificationError(why)
        except VerificationError as e:
            check.failures.append(f"the cosignature of {party} does not verify: {e.reason}")
            continue
        cosigned.append(party)
        check.proven.append(
            f"{party} witnessed that checkpoint: it cosigned it on "
            f"{format_time(cosignature.signed_at)} after checking it was consistent with "
            f"every earlier one it had cosigned, so {bundle.exported_by} cannot show it "
            "another history."
        )
    if not cosigned:
        check.warnings.append(
            f"No trusted witness cosigned the checkpoint: the log entries rest on "
            f"{bundle.exported_by}'s word alone."
        )
    if not bundle.entries:
        check.failures.append("the bundle holds no log entry about the message")
    seen: set[int] = set()
    events: dict[int, LogEvent] = {}
    for entry in bundle.entries:
        if entry.index in seen:
            check.failures.append(f"log entry {entry.index} appears twice")
            continue
        seen.add(entry.index)
        try:
            verify_inclusion(
                leaf_hash(entry.leaf), entry.index, checkpoint.size, entry.proof, checkpoint.root
            )
            event = LogEvent.from_leaf(entry.leaf)
            if event.message_id != bundle.message_id:
                raise VerificationError("it is about another message")
            if event.node != bundle.exported_by:
                raise VerificationError("it names another node's log")
        except VerificationError as e:
            check.failures.append(f"log entry {entry.index} does not verify: {e.reason}")
            continue
        events[entry.index] = event
        words = f" (verdict {event.verdict})" if event.verdict else ""
        who = f" by {event.user}" if event.user else ""
        check.proven.append(
            f"Log entry {entry.index}: {event.kind}{who}{words} on {format_time(event.at)}, "
            "included in that checkpoint."
        )
    _check_complete(bundle, events, check)
    return checkpoint


def _check_complete(bundle: Bundle, events: Mapping[int, LogEvent], check: _Check) -> None:
    """7. Completeness (issue 12): every version 2 event about a message names the
    previous event about it in the same log (`prev`), and the export's own entry
    (`EXPORT_EVENT`) ends the chain. Walking back from it must meet every entry of the
    bundle and find every link in it, so an entry left out (a read, a receipt) breaks
    the chain; a receipt the log records as stored must be in the bundle.

    Entries of the first format (version 1, before chaining) name no predecessor: a
    bundle of them alone still proves each entry, and says that it cannot prove none
    was left out; a chain that reaches one proves completeness from there on only."""
    if not events:
        return
    if not any(e.chained for e in events.values()):
        check.warnings.append(
            "The log entries are of the first format (before each entry named the one "
            "before it): each is proven, but not that no entry about the message was left "
            "out. Export the bundle again to have that proven."
        )
        return
    head_index = max(events)
    head = events[head_index]
    if not head.chained or head.kind != EXPORT_EVENT:
        check.failures.append(
            f"the last log entry ({head_index}, {head.kind}) is not the entry of the "
            "bundle's export: the entries after it were left out"
        )
        return
    visited: set[int] = set()
    index, event = head_index, head
    oldest_unchained: int | None = None
    while True:
        visited.add(index)
        if not event.chained:
            oldest_unchained = index
            break
        if event.prev is None:
            break
        previous = events.get(event.prev)
        if event.prev >= index or previous is None:
            check.failures.append(
                f"log entry {event.prev} about the message was left out of the bundle: "
                f"entry {index} names it as the one before it"
            )
            return
        index, event = event.prev, previous
    stray = sorted(
        i for i in events if i not in visited and (oldest_unchained is None or i > oldest_unchained)
    )
    if stray:
        check.failures.append(
            f"log entries {', '.join(map(str, stray))} are not in the chain of entries about "
            "the message"
        )
        return
    receipts = {r.sha256 for r in bundle.receipts}
    for i in sorted(visited):
        digest = events[i].digests.get("receipt")
        if events[i].kind == RECEIPT_STORED_EVENT and digest is not None and digest not in receipts:
            check.failures.append(
                f"the receipt that log entry {i} records as stored is not in the bundle: "
                "it was left out"
            )
            return
    if oldest_unchained is None:
        check.proven.append(
            f"The bundle holds every entry of {bundle.exported_by}'s log about message "
            f"{bundle.message_id} up to its export (entry {head_index}, "
            f"{format_time(head.at)}): each names the one before it, so none was left out."
        )
    else:
        check.proven.append(
            f"The bundle holds every entry of {bundle.exported_by}'s log about message "
            f"{bundle.message_id} from entry {oldest_unchained} up to its export (entry "
            f"{head_index}, {format_time(head.at)}): each names the one before it."
        )
        check.warnings.append(
            f"Entries before {oldest_unchained} are of the first format: each is proven, but "
            "not that none of them was left out."
        )


def _change_party(change: KeyChange) -> str | None:
    """The Party an unverified key-change statement names, only to tell whether the
    auditor trusts it."""
    try:
        payload = loads_canonical(change.envelope.payload)
    except VerificationError:
        return None
    party = payload.get("party") if isinstance(payload, dict) else None
    return party if isinstance(party, str) else None


def _rotated_from(change: KeyChange) -> str | None:
    """The seal an unverified rotation statement names as rotated out, only to word a
    warning; None for anything else."""
    try:
        rotation = RotationStatement.from_payload(loads_canonical(change.envelope.payload))
    except (VerificationError, ValueError):
        return None
    return rotation.old_key_id if rotation.kind is RotatedKind.SEAL else None


def _check_key_changes(
    bundle: Bundle, descriptors: Mapping[str, NodeDescriptor], check: _Check
) -> None:
    """0. The key changes: each trusted Party's seal chain, walked back from its
    descriptor's seal (`trace_seal_chain`); every statement in the bundle must be a link
    some chain used, or the bundle is refused (a missing or forged link)."""
    if not bundle.key_changes:
        return
    digests = [c.envelope.sha256 for c in bundle.key_changes]
    if len(set(digests)) != len(digests):
        check.failures.append("a key-change statement appears twice")
    linked: set[str] = set()
    for party, descriptor in descriptors.items():
        chain = trace_seal_chain(party, descriptor.seal, bundle.key_changes)
        check.chains[party] = chain
        check.proven.extend(chain.proven)
        check.failures.extend(chain.failures)
        linked |= chain.used | chain.refused
    strangers = sorted(
        {p for c in bundle.key_changes if (p := _change_party(c)) is not None} - set(descriptors)
    )
    if strangers:
        check.warnings.append(
            f"The bundle carries key changes of {', '.join(strangers)}, whose descriptors were "
            "not passed (--trust): they were not checked and count for nothing."
        )
    linked |= {c.envelope.sha256 for c in bundle.key_changes if _change_party(c) in strangers}
    for change in bundle.key_changes:
        # A rotation *from* a seal the auditor trusts, to a later one: the descriptor passed
        # is older than the Party's current one. It grants no trust; it is reported.
        owner, old = _change_party(change), _rotated_from(change)
        traced = None if owner is None else check.chains.get(owner)
        if change.envelope.sha256 in linked or traced is None or old is None:
            continue
        if old in {k.key_id for k in traced.history.keys}:
            linked.add(change.envelope.sha256)
            check.warnings.append(
                f"The bundle shows that {owner} rotated its seal {old[:16]}… afterwards: the "
                f"descriptor of {owner} you passed is not its current one; ask {owner} for it."
            )
    if any(d not in linked for d in digests):
        check.failures.append(
            "a key-change statement links to no seal of a trusted descriptor: a missing or "
            "forged link (or the descriptor of its Party was not passed with --trust)"
        )


def _one_descriptor_each(
    trusted: Sequence[NodeDescriptor], changes: Sequence[KeyChange], check: _Check
) -> dict[str, NodeDescriptor]:
    """One descriptor per Party. An auditor may pass a Party's descriptor of the time and
    its current one (issue 12): the one whose seal chain, traced through the bundle's key
    changes, reaches every other one's seal is the trust root, and the signatories of the
    others are kept (the auditor vouched for them too). Descriptors of one Party that no
    key change links are refused: the auditor must say which one to trust."""
    grouped: dict[str, list[NodeDescriptor]] = {}
    for d in trusted:
        same = grouped.setdefault(d.party, [])
        if d not in same:
            same.append(d)
    chosen: dict[str, NodeDescriptor] = {}
    for party, candidates in grouped.items():
        if len(candidates) == 1:
            chosen[party] = candidates[0]
            continue
        root = None
        for candidate in candidates:
            chain = trace_seal_chain(party, candidate.seal, changes)
            seals = {k.key_id for k in chain.history.keys}
            if all(other.seal.key_id in seals for other in candidates):
                root = candidate
                break
        if root is None:
            raise BundleVerificationError(
                [
                    f"{len(candidates)} descriptors of {party} whose seals no key change in the "
                    "bundle links: pass only the one you compared most recently"
                ],
                [],
            )
        signatories = list(root.signatories)
        known = {s.key.key_id for s in signatories}
        for other in candidates:
            for s in other.signatories:
                if s.key.key_id not in known:
                    known.add(s.key.key_id)
                    signatories.append(s)
        chosen[party] = dataclasses.replace(root, signatories=tuple(signatories))
        check.warnings.append(
            f"{len(candidates)} descriptors of {party} were passed: its seal "
            f"{root.seal.key_id[:16]}… is the trust root, the others' seals are linked to it "
            "by the bundle's key changes."
        )
    return chosen


def verify_bundle(
    data: bytes,
    trusted: Sequence[NodeDescriptor],
    *,
    consent: ConsentVerifier = check_consent_token,
) -> BundleEvidence:
    """Verify an evidence bundle against trusted node descriptors, offline.

    1. The bundle parses strictly (`Bundle.from_bytes`). Its key changes link earlier
       seals to the trusted descriptors' seals (`_check_key_changes`, issue 5): an earlier
       seal counts only for a statement or receipt dated inside its validity interval.
    2. The statement verifies under its sender's trusted keys: the seal, and a head or
       deputy for a request (art. 4.4); its message id is the bundle's.
    3. Each receipt is sealed by the recipient and binds this statement (DESIGN 5).
    4. Each consent token verifies (art. 7.3), by `consent` (`check_consent_token`: the
       originator's own, for this message); each revocation is the originator's, of a
       token in the bundle; each forward statement is sealed by the forwarder, for this
       message, under a token in the bundle that covers it. A receipt of a forward's third
       party then counts like the recipient's (step 3 runs after step 4).
    5. The checkpoint is signed by the exporter's seal as its log key; every other line is
       a trusted witness's cosignature that verifies (DESIGN 7).
    6. Each log entry is a well-formed event about this message, in the exporter's log,
       whose inclusion proof leads to the checkpoint's root (RFC 9162 2.1.3.2).
    7. The entries are complete (`_check_complete`, issue 12): chained each to the one
       before, from the export's own entry back, none left out, no receipt left out.
    Raises `BundleVerificationError` listing every failure; returns the evidence otherwise.
    """
    try:
        bundle = Bundle.from_bytes(data)
    except VerificationError as e:
        raise BundleVerificationError([f"the bundle is malformed: {e.reason}"], []) from e
    check = _Check()
    descriptors = _one_descriptor_each(trusted, bundle.key_changes, check)
    _check_key_changes(bundle, descriptors, check)
    statement = _check_statement(bundle, descriptors, check)
    if statement is not None:
        forwards = _check_consent(bundle, statement, descriptors, consent, check)
        _check_receipts(bundle, statement, descriptors, forwards, check)
    checkpoint = _check_log(bundle, descriptors, check)
    if check.failures:
        raise BundleVerificationError(check.failures, check.proven)
    return BundleEvidence(bundle.message_id, tuple(check.proven), tuple(check.warnings), checkpoint)
