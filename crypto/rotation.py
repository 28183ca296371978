"""Key-change statements: a node announces a rotated or revoked key to its peers.

Two statement kinds, each a DSSE envelope with a payload type of its own, so neither can
pass for the other, for a message, a receipt or a descriptor:

- A *rotation statement* (`application/vnd.accord.key-rotation+json; version=1`) names
  the Party, the kind of key (seal, encryption, TLS), the old key id, the new public key,
  the time it takes effect and the end of the overlap window during which the old key is
  still accepted. It is signed by the node's seal that is current *before* the rotation
  (for a seal rotation that is the old seal itself, DESIGN 8); a seal rotation is also
  signed by the new seal (proof of possession), so no one can announce a key they do not
  hold.
- A *revocation statement* (`application/vnd.accord.key-revocation+json; version=1`)
  names the Party, the revoked key id, the moment of revocation and the admin's reason.
  It is signed by a current seal of the same Party that is not the revoked key.

`KeyHistory` is the auditor's view of one Party's keys over time: which key was valid at
a given moment. `verify_at` verifies an envelope with the keys valid at the time the
statement claims, so a five-year-old message still verifies (agreement art. 13 keeps the
art. 7 duties for five years) while anything a revoked key claims to have signed at or
after its revocation is refused.

`trace_seal_chain` is the offline auditor's version, for evidence bundles: from the seal
of a descriptor the auditor trusts it walks a Party's seal rotations BACKWARDS (each link
signed by the seal already trusted and by the old one), then applies its revocations, and
says in plain words what it established.

Invariants:
- A statement in memory is well formed: it came from `from_payload`, which checks every
  field, or was built by the node and is signed with `sign`.
- `verify_rotation` and `verify_revocation` raise `VerificationError` or return the
  parsed statement with the evidence; they never return a bool.
- This module imports nothing of Accord's outside `crypto/`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from ._wire import (
    format_time,
    is_version,
    parse_hex64,
    parse_ident,
    parse_text,
    parse_time,
    require_keys,
)
from .canonical import loads_canonical
from .envelope import Envelope, VerifiedEnvelope, sign_envelope, verify_envelope
from .errors import VerificationError
from .keys import RecipientKey, Signer, VerifyKey
from .tls import certificate_fingerprint

__all__ = [
    "REVOCATION_TYPE",
    "ROTATION_TYPE",
    "HistoricKey",
    "KeyChange",
    "KeyHistory",
    "RevocationStatement",
    "RotatedKind",
    "RotationStatement",
    "SealChain",
    "VerifiedKeyChange",
    "trace_seal_chain",
    "verify_revocation",
    "verify_rotation",
]

ROTATION_TYPE = "application/vnd.accord.key-rotation+json; version=1"
REVOCATION_TYPE = "application/vnd.accord.key-revocation+json; version=1"
STATEMENT_VERSION = 1
MAX_REASON = 1000
# An overlap window is a matter of days; a year-long one would keep a rotated-out key
# alive for no reason, so a statement asking for more is malformed.
MAX_OVERLAP = timedelta(days=366)


class RotatedKind(StrEnum):
    SEAL = "seal"
    ENCRYPTION = "encryption"
    TLS = "tls"


def _parse_new_key(kind: RotatedKind, data: Any) -> dict[str, str]:
    """The new public key of a rotation, checked for its kind; returns it normalised."""
    if kind is RotatedKind.SEAL:
        try:
            return VerifyKey.from_dict(data).to_dict()
        except ValueError as e:
            raise VerificationError(f"new seal key: {e}") from e
    if kind is RotatedKind.ENCRYPTION:
        try:
            return RecipientKey.from_dict(data).to_dict()
        except ValueError as e:
            raise VerificationError(f"new encryption key: {e}") from e
    data = require_keys(data, {"alg", "sha256", "certificate_pem"}, set(), "new TLS key")
    if data["alg"] != "x509":
        raise VerificationError("a new TLS key is an x509 certificate")
    pem = parse_text(data["certificate_pem"], "certificate_pem", max_len=16384)
    digest = parse_hex64(data["sha256"], "new TLS key sha256")
    try:
        actual = certificate_fingerprint(pem.encode("ascii"))
    except Exception as e:
        raise VerificationError("the new TLS certificate cannot be read") from e
    if actual != digest:
        raise VerificationError("the new TLS certificate does not match its digest")
    return {"alg": "x509", "sha256": digest, "certificate_pem": pem}


def new_key_id(kind: RotatedKind, public: Mapping[str, str]) -> str:
    """The key id the registry uses for a public key of `kind` (a TLS key: its cert digest)."""
    return public["sha256"] if kind is RotatedKind.TLS else public["key_id"]


@dataclass(frozen=True)
class RotationStatement:
    """ "Party P replaces its `kind` key `old_key_id` by `new_key` from `effective`; the old
    key stays acceptable until `overlap_until`." """

    party: str
    kind: RotatedKind
    old_key_id: str
    new_key: Mapping[str, str]
    effective: datetime
    overlap_until: datetime
    issued: datetime

    def __post_init__(self) -> None:
        if self.overlap_until < self.effective:
            raise VerificationError("the overlap window ends before the new key takes effect")
        if self.overlap_until - self.effective > MAX_OVERLAP:
            raise VerificationError("the overlap window is longer than a year")
        if self.old_key_id == self.new_key_id:
            raise VerificationError("a rotation replaces a key by another key")

    @property
    def new_key_id(self) -> str:
        return new_key_id(self.kind, self.new_key)

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": STATEMENT_VERSION,
            "party": self.party,
            "kind": self.kind.value,
            "old_key_id": self.old_key_id,
            "new_key_id": self.new_key_id,
            "new_key": dict(self.new_key),
            "effective": format_time(self.effective),
            "overlap_until": format_time(self.overlap_until),
            "issued": format_time(self.issued),
        }

    @classmethod
    def from_payload(cls, data: Any) -> RotationStatement:
        fields = {"v", "party", "kind", "old_key_id", "new_key_id", "new_key", "effective",
                  "overlap_until"}  # fmt: skip
        data = require_keys(data, fields | {"issued"}, set(), "rotation statement")
        if not is_version(data["v"], STATEMENT_VERSION):
            raise VerificationError(f"unsupported rotation statement version {data['v']!r}")
        try:
            kind = RotatedKind(data["kind"])
        except ValueError as e:
            raise VerificationError(f"unknown key kind {data['kind']!r}") from e
        new_key = _parse_new_key(kind, data["new_key"])
        if parse_hex64(data["new_key_id"], "new_key_id") != new_key_id(kind, new_key):
            raise VerificationError("new_key_id does not name the new key")
        return cls(
            party=parse_ident(data["party"], "party"),
            kind=kind,
            old_key_id=parse_hex64(data["old_key_id"], "old_key_id"),
            new_key=new_key,
            effective=parse_time(data["effective"], "effective"),
            overlap_until=parse_time(data["overlap_until"], "overlap_until"),
            issued=parse_time(data["issued"], "issued"),
        )

    def sign(self, current_seal: Signer, new_seal: Signer | None = None) -> Envelope:
        """Sign with the seal current before the rotation; a seal rotation also needs the
        new seal's signature (proof of possession)."""
        signers = [current_seal]
        if self.kind is RotatedKind.SEAL:
            if new_seal is None or new_seal.key_id != self.new_key_id:
                raise ValueError("a seal rotation is co-signed by the new seal it announces")
            if current_seal.key_id != self.old_key_id:
                raise ValueError("a seal rotation is signed by the seal it replaces")
            signers.append(new_seal)
        elif new_seal is not None:
            raise ValueError("only a seal rotation carries the new key's signature")
        return sign_envelope(ROTATION_TYPE, self.to_payload(), signers)


@dataclass(frozen=True)
class RevocationStatement:
    """ "Party P revoked its key `key_id` at `revoked_at`, because `reason`." """

    party: str
    key_id: str
    revoked_at: datetime
    reason: str
    issued: datetime

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": STATEMENT_VERSION,
            "party": self.party,
            "key_id": self.key_id,
            "revoked_at": format_time(self.revoked_at),
            "reason": self.reason,
            "issued": format_time(self.issued),
        }

    @classmethod
    def from_payload(cls, data: Any) -> RevocationStatement:
        fields = {"v", "party", "key_id", "revoked_at", "reason", "issued"}
        data = require_keys(data, fields, set(), "revocation statement")
        if not is_version(data["v"], STATEMENT_VERSION):
            raise VerificationError(f"unsupported revocation statement version {data['v']!r}")
        reason = parse_text(data["reason"], "reason", max_len=MAX_REASON)
        if not reason.strip():
            raise VerificationError("a revocation states its reason")
        return cls(
            party=parse_ident(data["party"], "party"),
            key_id=parse_hex64(data["key_id"], "key_id"),
            revoked_at=parse_time(data["revoked_at"], "revoked_at"),
            reason=reason,
            issued=parse_time(data["issued"], "issued"),
        )

    def sign(self, current_seal: Signer) -> Envelope:
        if current_seal.key_id == self.key_id:
            raise ValueError("a revocation is signed by another current seal, not the revoked key")
        return sign_envelope(REVOCATION_TYPE, self.to_payload(), [current_seal])


# --- Key history -----------------------------------------------------------------------


@dataclass(frozen=True)
class HistoricKey:
    """One signing key of a Party and the interval in which it could sign.

    Valid at `t` when `not_before <= t`, `t <= not_after` (if set: the end of its overlap
    window or of its certificate), and `t < revoked_at` (if revoked).
    """

    key: VerifyKey
    not_before: datetime
    not_after: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def valid_at(self, moment: datetime) -> bool:
        if moment < self.not_before:
            return False
        if self.not_after is not None and moment > self.not_after:
            return False
        return self.revoked_at is None or moment < self.revoked_at


@dataclass(frozen=True)
class KeyHistory:
    """Every signing key a Party ever held, with validity intervals."""

    party: str
    keys: tuple[HistoricKey, ...] = field(default_factory=tuple)

    def get(self, key_id: str) -> HistoricKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def valid_at(self, *moments: datetime) -> dict[str, VerifyKey]:
        """The keys that could sign at every one of `moments`."""
        return {k.key_id: k.key for k in self.keys if all(k.valid_at(m) for m in moments)}

    def verify_at(
        self,
        envelope: Envelope,
        *,
        payload_type: str,
        moment: datetime,
        also_at: datetime | None = None,
        required: Collection[str] = (),
    ) -> VerifiedEnvelope:
        """Verify `envelope` with the keys valid at `moment` (the time the statement claims).

        1. Only keys valid at `moment` are trusted: a key used before it existed, after its
           overlap window or at or after its revocation proves nothing.
        2. With `also_at` (now, for a statement acted upon now), the key must be valid then
           too: a revoked key cannot sign something new by backdating it.
        3. At least one of them signed; every signature by a trusted key verifies
           (`verify_envelope`).
        """
        trusted = self.valid_at(moment) if also_at is None else self.valid_at(moment, also_at)
        if not trusted:
            raise VerificationError(f"no key of {self.party} was valid at {format_time(moment)}")
        return verify_envelope(envelope, trusted, payload_type=payload_type, required=required)


# --- Verification ----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedKeyChange:
    """Evidence that a key-change statement verified."""

    statement: RotationStatement | RevocationStatement
    evidence: VerifiedEnvelope


def _payload(envelope: Envelope, payload_type: str) -> Any:
    if envelope.payload_type != payload_type:
        raise VerificationError(
            f"payload type {envelope.payload_type!r} where {payload_type!r} was expected"
        )
    return loads_canonical(envelope.payload)


def verify_rotation(
    envelope: Envelope, *, party: str, history: KeyHistory, now: datetime
) -> VerifiedKeyChange:
    """Verify a rotation statement of `party` against its key history.

    1. The payload is a rotation statement (type confusion stops here) of `party` (a peer
       cannot rotate another Party's keys).
    2. It is signed by a seal of `party` that is valid at `issued` and still valid `now`
       (never revoked, not past its overlap window: a revoked key cannot announce a key
       by backdating its statement); for a seal rotation that seal is the old key itself.
    3. A seal rotation is also signed by the new seal (proof of possession).
    4. It was not issued in the future (beyond five minutes of clock skew).
    """
    statement = RotationStatement.from_payload(_payload(envelope, ROTATION_TYPE))
    if statement.party != party:  # 1
        raise VerificationError(f"rotation statement of {statement.party!r}, not {party!r}")
    if statement.issued > now + timedelta(minutes=5):  # 4
        raise VerificationError("rotation statement issued in the future: check both clocks")
    required = []
    if statement.kind is RotatedKind.SEAL:
        required.append(statement.old_key_id)
    evidence = history.verify_at(  # 2
        envelope,
        payload_type=ROTATION_TYPE,
        moment=statement.issued,
        also_at=now,
        required=required,
    )
    if statement.kind is RotatedKind.SEAL:  # 3
        new_seal = VerifyKey.from_dict(statement.new_key)
        verify_envelope(
            envelope, [new_seal], payload_type=ROTATION_TYPE, required=[new_seal.key_id]
        )
    return VerifiedKeyChange(statement, evidence)


def verify_revocation(
    envelope: Envelope, *, party: str, history: KeyHistory, now: datetime
) -> VerifiedKeyChange:
    """Verify a revocation statement of `party` against its key history.

    1. The payload is a revocation statement of `party`.
    2. It is signed by a seal of `party` valid at `issued` and `now` that is not the revoked
       key (a stolen key must not be able to "revoke" itself and stand in for the owner).
    3. It was not issued in the future (beyond five minutes of clock skew).
    """
    statement = RevocationStatement.from_payload(_payload(envelope, REVOCATION_TYPE))
    if statement.party != party:  # 1
        raise VerificationError(f"revocation statement of {statement.party!r}, not {party!r}")
    if statement.issued > now + timedelta(minutes=5):  # 3
        raise VerificationError("revocation statement issued in the future: check both clocks")
    trusted = {
        k: v for k, v in history.valid_at(statement.issued, now).items() if k != statement.key_id
    }
    if not trusted:
        raise VerificationError("no other current seal of the Party signed this revocation")
    evidence = verify_envelope(envelope, trusted, payload_type=REVOCATION_TYPE)  # 2
    return VerifiedKeyChange(statement, evidence)


# --- Seal chains in evidence bundles ---------------------------------------------------

# The start of time for a key whose beginning no statement in hand tells.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class KeyChange:
    """A key-change statement as an evidence bundle carries it: the signed envelope and,
    for a seal rotation, the old seal's public key (the statement names it by id only;
    the key is checked against that id, so it needs no signature of its own)."""

    envelope: Envelope
    old_key: VerifyKey | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"statement": self.envelope.to_dict()}
        if self.old_key is not None:
            data["old_key"] = self.old_key.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> KeyChange:
        data = require_keys(data, {"statement"}, {"old_key"}, "key change")
        old_key = None
        if "old_key" in data:
            try:
                old_key = VerifyKey.from_dict(data["old_key"])
            except ValueError as e:
                raise VerificationError(f"the old key of a key change: {e}") from e
        return cls(Envelope.from_dict(data["statement"]), old_key)


@dataclass(frozen=True)
class SealChain:
    """What `trace_seal_chain` established for one Party: its seals with their validity
    intervals (`history`), the rotations and revocations it accepted in plain words
    (`proven`), and the links it refused (`failures`)."""

    history: KeyHistory
    current: str
    proven: tuple[str, ...]
    failures: tuple[str, ...]
    used: frozenset[str]  # envelope digests of the statements it accepted
    refused: frozenset[str]  # and of those it refused (named in `failures`)

    def seal_at(self, key_id: str, moment: datetime) -> str | None:
        """None when seal `key_id` of the Party could sign at `moment`, else why not."""
        key = self.history.get(key_id)
        if key is None:
            return f"{key_id[:16]}… is no seal of {self.history.party} in the trusted chain"
        if key.valid_at(moment):
            return None
        when = format_time(moment)
        if key.revoked_at is not None and moment >= key.revoked_at:
            return (
                f"the seal {key_id[:16]}… of {self.history.party} was revoked on "
                f"{format_time(key.revoked_at)}, before the signature dated {when}"
            )
        if key.not_after is not None and moment > key.not_after:
            return (
                f"the seal {key_id[:16]}… of {self.history.party} was rotated out (its overlap "
                f"ended {format_time(key.not_after)}), before the signature dated {when}"
            )
        return f"the seal {key_id[:16]}… of {self.history.party} did not exist yet on {when}"


def _unverified(envelope: Envelope) -> RotationStatement | RevocationStatement | None:
    """The statement an envelope claims, before any signature is checked (for routing)."""
    try:
        if envelope.payload_type == ROTATION_TYPE:
            return RotationStatement.from_payload(loads_canonical(envelope.payload))
        if envelope.payload_type == REVOCATION_TYPE:
            return RevocationStatement.from_payload(loads_canonical(envelope.payload))
    except VerificationError:
        return None
    return None


def trace_seal_chain(party: str, current: VerifyKey, changes: Sequence[KeyChange]) -> SealChain:
    """Walk `party`'s seal rotations BACKWARDS from the seal the auditor trusts (`current`,
    from a descriptor compared out of band), then apply its revocations (issue 5, history;
    agreement art. 13 keeps the art. 7 duties for five years).

    1. A seal rotation from X to a trusted seal Y counts only when signed by Y (the key the
       auditor already trusts: its proof of possession) AND by X, whose public key the
       change carries under the id the statement names, and by no one else. X is then
       trusted for signatures dated up to the end of the rotation's overlap window.
    2. Two rotations to the same seal are a fork: both are refused.
    3. A revocation of a chain seal counts only when signed by another chain seal valid
       at the revocation's date (earlier revocations applied first); the revoked seal is
       then trusted only for signatures dated before the revocation.
    A statement of `party` that links to nothing trusted (a missing or forged link) is in
    neither `used` nor `refused`: the caller refuses what no chain used.
    """
    mine = [
        (c, s) for c in changes if (s := _unverified(c.envelope)) is not None and s.party == party
    ]
    rotations = [
        (c, s) for c, s in mine if isinstance(s, RotationStatement) and s.kind is RotatedKind.SEAL
    ]
    proven: list[str] = []
    failures: list[str] = []
    used: set[str] = set()
    refused: set[str] = set()
    keys: dict[str, HistoricKey] = {current.key_id: HistoricKey(current, _EPOCH)}
    frontier = [current.key_id]
    while frontier:
        newer = frontier.pop()
        links = [(c, s) for c, s in rotations if s.new_key_id == newer]
        if len(links) > 1:  # 2
            failures.append(
                f"two rotations of {party} lead to the seal {newer[:16]}…: a fork, refused"
            )
            refused.update(c.envelope.sha256 for c, _ in links)
            continue
        if not links:
            continue
        change, rotation = links[0]
        try:
            old = change.old_key
            if old is None or old.key_id != rotation.old_key_id:
                raise VerificationError("it does not carry the public key of the seal it replaces")
            if old.key_id in keys:
                raise VerificationError("it rotates to a seal already in the chain (a loop)")
            if len(change.envelope.signatures) != 2:
                raise VerificationError("a seal rotation carries the old and the new seal alone")
            verify_envelope(  # 1
                change.envelope,
                [old, keys[newer].key],
                payload_type=ROTATION_TYPE,
                required=[old.key_id, newer],
            )
        except VerificationError as e:
            failures.append(
                f"the rotation of {party}'s seal to {newer[:16]}… does not verify: {e.reason}"
            )
            refused.add(change.envelope.sha256)
            continue
        used.add(change.envelope.sha256)
        keys[newer] = HistoricKey(keys[newer].key, rotation.effective)
        keys[old.key_id] = HistoricKey(old, _EPOCH, not_after=rotation.overlap_until)
        frontier.append(old.key_id)
        proven.append(
            f"{party}'s seal {old.key_id[:16]}… was rotated to {newer[:16]}… on "
            f"{format_time(rotation.effective)}, signed by both seals; {old.key_id[:16]}… "
            f"signed for {party} until {format_time(rotation.overlap_until)}."
        )
    revocations = sorted(
        ((c, s) for c, s in mine if isinstance(s, RevocationStatement)),
        key=lambda cs: cs[1].issued,
    )
    for change, revocation in revocations:  # 3
        try:
            target = keys.get(revocation.key_id)
            if target is None:
                raise VerificationError("it names no seal of the trusted chain")
            signers = {
                k.key_id: k.key
                for k in keys.values()
                if k.key_id != revocation.key_id and k.valid_at(revocation.issued)
            }
            if not signers:
                raise VerificationError(
                    f"no other seal of {party} was valid on {format_time(revocation.issued)}"
                )
            evidence = verify_envelope(change.envelope, signers, payload_type=REVOCATION_TYPE)
            if len(evidence.key_ids) != len(change.envelope.signatures):
                raise VerificationError("it carries a signature by a key outside the chain")
        except VerificationError as e:
            failures.append(f"a revocation of {party} does not verify: {e.reason}")
            refused.add(change.envelope.sha256)
            continue
        used.add(change.envelope.sha256)
        keys[target.key_id] = HistoricKey(
            target.key, target.not_before, target.not_after, revocation.revoked_at
        )
        proven.append(
            f"{party} revoked its seal {target.key_id[:16]}… on "
            f"{format_time(revocation.revoked_at)} («{revocation.reason}»): what it signed "
            "from then on proves nothing."
        )
    return SealChain(
        KeyHistory(party, tuple(keys.values())),
        current.key_id,
        tuple(proven),
        tuple(failures),
        frozenset(used),
        frozenset(refused),
    )
