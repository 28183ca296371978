"""The key lifecycle of a node (issue 5; DESIGN 8): rotation, revocation, history, expiry,
passphrase change, and applying the rotations and revocations that peers announce.

Choice (documented in docs/admin-guide.md): every admin key command works on the node's
*home*, whether the node runs or not, like the other admin commands (CLI.md). The signed
statement is queued in the database (`key_announcements`); the running node's key upkeep
task sends it to every peer over the peer API within seconds, or the node sends it at its
next start. The running node adopts its new keys itself: it holds its passphrase (it
already holds the decrypted keys, which are more sensitive) and reloads its key ring when
the key history changes. It keeps signing with the old seal, and presenting the old TLS
certificate, until every peer has acknowledged the rotation (or half the overlap window has
passed), so that no message in flight is refused by a peer that has not heard of the new key.

Invariants:
- A rotation or revocation is one database transaction; the key files it moves are moved
  back if that transaction fails. A passphrase change re-encrypts every node key file or
  none (all are written beside the old ones first, then swapped).
- The history keeps every key ever held or trusted, with its validity interval and, for a
  revocation, its reason; nothing is deleted. Every key event goes through `_key_event`.
- A key a peer announces is trusted only from a statement that verifies against that
  peer's key history (`crypto.rotation`); towards the peer every refusal looks the same.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from accord.crypto import (
    DecryptionKey,
    Envelope,
    KdfCost,
    KeyFileError,
    Signer,
    SigningKey,
    VerificationError,
    VerifyKey,
    load_private_key,
)
from accord.crypto.canonical import loads_canonical
from accord.crypto.descriptor import format_fingerprint
from accord.crypto.keys import DecryptionKeyRing
from accord.crypto.rotation import (
    REVOCATION_TYPE,
    ROTATION_TYPE,
    HistoricKey,
    KeyHistory,
    RevocationStatement,
    RotatedKind,
    RotationStatement,
    verify_revocation,
    verify_rotation,
)
from accord.crypto.tls import TlsError, TlsIdentity, certificate_not_after
from accord.gateway.admin.home import (
    AdminError,
    _certificate_hosts,
    _funnel,
    _own_party,
    export_descriptor,
    read_descriptor,
)
from accord.gateway.audit import log as _audit
from accord.gateway.keys.store import (
    NODE_PASSPHRASE_VAR,
    KeyStoreError,
    NodeKeys,
    open_seal_ref,
    seal_token_file,
)
from accord.gateway.node.config import Home, NodeConfig
from accord.storage import (
    Database,
    Key,
    KeyKind,
    KeyStatus,
    NotFound,
    PeerStatus,
    add_key,
    get_key,
    get_peer,
    keep_peer_statement,
    list_key_events,
    list_keys,
    list_peers,
    overlap_key,
    pending_announcements,
    queue_announcement,
    record_key_event,
    revoke_key,
    statement_applied,
)

__all__ = [
    "DEFAULT_OVERLAP",
    "EXPIRY_WARNING",
    "Finding",
    "KeyChangeRefused",
    "KeyRing",
    "KeyStatusInfo",
    "RevocationResult",
    "RotationResult",
    "apply_peer_statement",
    "change_passphrase",
    "diagnose",
    "expiry_warnings",
    "key_events",
    "key_history",
    "key_status",
    "load_key_ring",
    "peer_certificates",
    "revoke",
    "rotate",
]

log = logging.getLogger("accord.keys")

DEFAULT_OVERLAP = timedelta(days=7)
MAX_OVERLAP = timedelta(days=365)
# TLS certificates are valid for a year; the node warns a month ahead (CLI `keys list`,
# the health endpoint, the log), which leaves time for a rotation and its overlap window.
EXPIRY_WARNING = timedelta(days=30)
_HISTORY_DIR = "history"


class KeyChangeRefused(Exception):
    """A peer's key-change statement was refused; the reason is for our log only."""


# --- The audit hook ------------------------------------------------------------------------


# Key history events (storage) and the audit log's kinds (DESIGN 7 "key change").
_AUDIT_KINDS = {
    "generated": _audit.EventKind.KEY_ADDED,
    "rotated-in": _audit.EventKind.KEY_ROTATED,
    "rotated-out": _audit.EventKind.KEY_RETIRED,
    "revoked": _audit.EventKind.KEY_REVOKED,
    "peer-rotated-in": _audit.EventKind.KEY_ROTATED,
    "peer-rotated-out": _audit.EventKind.KEY_RETIRED,
    "peer-revoked": _audit.EventKind.KEY_REVOKED,
}


def _key_event(
    session: Session,
    *,
    event: str,
    key: Key,
    actor: str,
    now: datetime,
    reason: str | None = None,
    statement_sha256: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record one key event in the key history, in the caller's transaction.

    This is the one place every key event passes (generated, rotated in or out, revoked,
    a peer's rotation or revocation applied, passphrase changed); each is also a leaf of
    the audit log (gateway/_audit.py, DESIGN 7 "key change"), in the same transaction.
    """
    record_key_event(
        session,
        event=event,
        key=key,
        actor=actor,
        now=now,
        reason=reason,
        statement_sha256=statement_sha256,
        detail=detail,
    )
    _audit.record(
        session,
        _audit.key_event(
            _AUDIT_KINDS.get(event, _audit.EventKind.KEY_EVENT),
            _own_party(session),
            now,
            key_id=key.key_id,
            key_kind=key.kind,
            owner=key.owner,
            user=actor,
            reason=event if reason is None else f"{event}: {reason}",
        ),
    )
    log.info(
        "key event %s: %s key %s of %s by %s",
        event,
        key.kind.value,
        key.key_id[:16],
        key.owner,
        actor,
    )


# --- Rotation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationResult:
    kind: RotatedKind
    old_key_id: str
    new_key_id: str
    effective: datetime
    overlap_until: datetime
    announced_to: tuple[str, ...]
    # The node's new fingerprint (it covers the seal, encryption and TLS keys): peers that
    # receive the statement need no new comparison; a peer added later compares this one.
    fingerprint: str


def _parse_kind(kind: str | RotatedKind) -> RotatedKind:
    try:
        return RotatedKind(kind)
    except ValueError as e:
        raise AdminError(f"unknown key kind {kind!r}. Use seal, encryption or tls") from e


def _key_kind(kind: RotatedKind) -> KeyKind:
    return KeyKind(kind.value)


def _current_key_id(keys: NodeKeys, kind: RotatedKind) -> str:
    if kind is RotatedKind.SEAL:
        return keys.seal.key_id
    if kind is RotatedKind.ENCRYPTION:
        return keys.encryption.key_id
    return keys.tls.fingerprint


def _history_path(home: Home, kind: RotatedKind, key_id: str) -> Path:
    name = f"{kind.value}-{key_id[:32]}"
    if kind is RotatedKind.TLS:
        return home.seal_key.parent / _HISTORY_DIR / name
    return home.seal_key.parent / _HISTORY_DIR / (name + _current_path(home, kind).suffix)


def _current_path(home: Home, kind: RotatedKind) -> Path:
    if kind is RotatedKind.SEAL:
        token = seal_token_file(home)
        return token if token.exists() and not home.seal_key.exists() else home.seal_key
    if kind is RotatedKind.ENCRYPTION:
        return home.encryption_key
    return home.tls_dir


def _store_ref(home: Home, kind: RotatedKind, path: Path) -> str:
    return str(path / "tls.key") if kind is RotatedKind.TLS else str(path)


class _FileSwap:
    """Put a staged key in place of the current one, keeping the current one in history;
    `undo` puts everything back (used when the database transaction fails)."""

    def __init__(self, current: Path, staged: Path, history: Path, target: Path) -> None:
        self.current, self.staged, self.history = current, staged, history
        self.target = target  # where the new key goes: the current path, or a token file
        self._moved: list[tuple[Path, Path]] = []

    def apply(self) -> None:
        if self.history.exists():
            raise AdminError(f"{self.history} already exists. Move it away and retry")
        self.history.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.replace(self.current, self.history)
        self._moved.append((self.history, self.current))
        os.replace(self.staged, self.target)
        self._moved.append((self.target, self.staged))

    def undo(self) -> None:
        for moved_to, came_from in reversed(self._moved):
            os.replace(moved_to, came_from)
        self._moved.clear()
        _remove(self.staged)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def rotate(
    home: Home,
    kind: str | RotatedKind,
    *,
    passphrase: bytes,
    now: datetime,
    overlap: timedelta = DEFAULT_OVERLAP,
    actor: str = "admin",
    kdf_cost: KdfCost | None = None,
    token_uri: str | None = None,
) -> RotationResult:
    """Make the next `kind` key, announce it to every active peer, keep the old one for
    the overlap window.

    1. The node's keys open with `passphrase` and the key on disk is the active one in
       the history (a restored backup of only one of them is refused).
    2. The new key is made and saved encrypted beside the current one.
    3. The rotation statement is signed by the current seal (and, for a seal, by the new
       one), then queued for every active peer, in the one transaction that also moves the
       old key into its overlap window and records the new key and the events.
    4. The files are swapped (old key to keys/history/) just before that transaction
       commits, and swapped back if it fails.
    """
    rotated = _parse_kind(kind)
    now = _aware(now)
    if token_uri is not None and rotated is not RotatedKind.SEAL:
        raise AdminError("only the seal can live on a PKCS#11 token; drop --token-uri")
    if not timedelta(0) < overlap <= MAX_OVERLAP:
        raise AdminError("the overlap window must be longer than 0 and at most 365 days")
    with _funnel():
        config = home.load_config()
        keys = NodeKeys.load(home, passphrase)  # 1
        old_id = _current_key_id(keys, rotated)
        db = Database.open(config.database)
        with db:
            with db.session(readonly=True) as session:
                _require_active_on_disk(session, config.party, rotated, old_id)
            staged, new_public, new_seal, new_not_after = _make_next(  # 2
                home, config, rotated, passphrase, now, kdf_cost, token_uri
            )
            target = seal_token_file(home) if token_uri else _new_path(home, rotated)
            statement = RotationStatement(
                party=config.party,
                kind=rotated,
                old_key_id=old_id,
                new_key=new_public,
                effective=now,
                overlap_until=now + overlap,
                issued=now,
            )
            try:
                envelope = statement.sign(keys.seal, new_seal)  # 3
            finally:
                # A token signer holds a logged-in session; this command needs it no more.
                for signer in (keys.seal, new_seal):
                    getattr(signer, "close", lambda: None)()
            history = _history_path(home, rotated, old_id)
            swap = _FileSwap(_current_path(home, rotated), staged, history, target)
            try:
                with db.session() as session:
                    old = get_key(session, old_id)
                    overlap_key(
                        session,
                        old_id,
                        until=min(
                            statement.overlap_until, old.not_after or statement.overlap_until
                        ),
                    )
                    if not (old.store_ref or "").startswith("pkcs11:"):
                        old.store_ref = _store_ref(home, rotated, history)
                    session.add(old)
                    new = add_key(
                        session,
                        key_id=statement.new_key_id,
                        kind=_key_kind(rotated),
                        owner=config.party,
                        public=new_public,
                        store_ref=token_uri or _store_ref(home, rotated, target),
                        not_before=now,
                        not_after=new_not_after,
                    )
                    _key_event(session, event="generated", key=new, actor=actor, now=now)
                    _rotation_events(
                        session,
                        old=old,
                        new=new,
                        actor=actor,
                        now=now,
                        statement=statement,
                        statement_sha256=envelope.payload_sha256,
                    )
                    peers = _queue_for_peers(session, ROTATION_TYPE, envelope, now)
                    swap.apply()  # 4
            except BaseException:
                swap.undo()
                raise
    descriptor = read_descriptor(export_descriptor(home, passphrase, now))
    return RotationResult(
        fingerprint=format_fingerprint(descriptor.fingerprint),
        kind=rotated,
        old_key_id=old_id,
        new_key_id=statement.new_key_id,
        effective=now,
        overlap_until=statement.overlap_until,
        announced_to=tuple(peers),
    )


def _require_active_on_disk(session: Session, party: str, kind: RotatedKind, key_id: str) -> None:
    try:
        key = get_key(session, key_id)
    except NotFound:
        key = None
    if key is None or key.owner != party or key.status is not KeyStatus.ACTIVE:
        raise AdminError(
            f"the {kind.value} key on disk is not this node's active {kind.value} key in the "
            "database. Restore the matching key file or database backup"
        )


def _new_path(home: Home, kind: RotatedKind) -> Path:
    """Where the next key of `kind` is kept as a file."""
    if kind is RotatedKind.SEAL:
        return home.seal_key
    return _current_path(home, kind)


def _make_next(
    home: Home,
    config: NodeConfig,
    kind: RotatedKind,
    passphrase: bytes,
    now: datetime,
    kdf_cost: KdfCost | None,
    token_uri: str | None = None,
) -> tuple[Path, dict[str, str], Signer | None, datetime | None]:
    """The next key, saved encrypted at a staging path: (path, public, seal, not_after).
    With `token_uri`, the seal is generated on the PKCS#11 token and the staged file holds
    only its URI."""
    target = seal_token_file(home) if token_uri else _new_path(home, kind)
    staged = target.with_name(target.name + ".next")
    _remove(staged)
    if token_uri is not None:
        public, signer = _make_token_seal(token_uri, passphrase, staged)
        return staged, public, signer, None
    try:
        if kind is RotatedKind.SEAL:
            seal = SigningKey.generate()
            seal.save(staged, passphrase, cost=kdf_cost)
            return staged, seal.verify_key().to_dict(), seal, None
        if kind is RotatedKind.ENCRYPTION:
            encryption = DecryptionKey.generate()
            encryption.save(staged, passphrase, cost=kdf_cost)
            return staged, encryption.recipient().to_dict(), None, None
        tls = TlsIdentity.generate(
            config.party, hosts=_certificate_hosts(config.listen, config.local), now=now
        )
        tls.save(staged, passphrase)
    except (OSError, TlsError, ValueError) as e:
        _remove(staged)
        raise AdminError(f"cannot write the new {kind.value} key into {home.root}: {e}") from e
    public = {
        "alg": "x509",
        "sha256": tls.fingerprint,
        "certificate_pem": tls.certificate_pem.decode("ascii"),
    }
    return staged, public, None, tls.not_after


def _make_token_seal(uri: str, passphrase: bytes, staged: Path) -> tuple[dict[str, str], Signer]:
    """Generate the next seal on a PKCS#11 token (it never leaves it) and stage its URI."""
    try:
        from accord.crypto.pkcs11 import Pkcs11Uri, TokenError, generate_token_key
    except ImportError as e:
        raise AdminError("python-pkcs11 is not installed: pip install python-pkcs11") from e
    try:
        ref = Pkcs11Uri.parse(uri)
        if ref.pin_value is not None:
            raise AdminError(
                "the token URI carries its PIN: use pin-source=env:VARIABLE (or a file), so "
                "the PIN is not written into the home"
            )
        public = generate_token_key(ref)
    except TokenError as e:
        raise AdminError(f"cannot make the seal on the token: {e}") from e
    signer = open_seal_ref(uri, passphrase, expected_key_id=public.key_id)
    staged.write_text(uri + "\n", encoding="utf-8")
    staged.chmod(0o600)
    return public.to_dict(), signer


def _queue_for_peers(
    session: Session, payload_type: str, envelope: Envelope, now: datetime
) -> list[str]:
    peers = [p.party_id for p in list_peers(session) if p.status is PeerStatus.ACTIVE]
    text = envelope.to_bytes().decode("utf-8")
    for party in peers:
        queue_announcement(session, peer=party, payload_type=payload_type, envelope=text, now=now)
    return peers


# --- Revocation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevocationResult:
    key_id: str
    kind: KeyKind
    owner: str
    revoked_at: datetime
    reason: str
    announced_to: tuple[str, ...]


def revoke(
    home: Home,
    key_id: str,
    *,
    reason: str,
    passphrase: bytes | None,
    now: datetime,
    actor: str = "admin",
) -> RevocationResult:
    """Revoke a key from `now` with the admin's reason.

    - One of this node's keys (or its users'): peers are told by a revocation statement
      signed by the node's active seal, which must not be the revoked key. The active
      seal, encryption key or TLS key cannot be revoked: rotate first, then revoke the
      old key (the node would otherwise have no key of that kind).
    - A peer's key: only this node stops trusting it (no statement; the peer was not
      asked). `passphrase` may then be None.
    What the key signed before `now` stays verifiable; what claims a later time is refused.
    """
    now = _aware(now)
    reason = " ".join(reason.split())
    if not reason:
        raise AdminError("a revocation needs a reason: give --reason TEXT")
    if len(reason) > 1000:
        raise AdminError("the reason is longer than 1000 characters. Shorten it")
    with _funnel():
        config = home.load_config()
        with Database.open(config.database) as db, db.session() as session:
            try:
                key = get_key(session, key_id)
            except NotFound as e:
                raise AdminError(
                    f"no key {key_id} in this node's history. List them with `accord keys list "
                    "--peers`"
                ) from e
            if key.status is KeyStatus.REVOKED:
                raise AdminError(f"key {key_id[:16]}… is already revoked ({key.reason})")
            local = key.store_ref is not None
            if local and key.status is KeyStatus.ACTIVE and key.kind is not KeyKind.SIGNATORY:
                raise AdminError(
                    f"key {key_id[:16]}… is the node's active {key.kind.value} key. Rotate it "
                    f"first (`accord keys rotate --key {key.kind.value}`), then revoke the old one"
                )
            peers: list[str] = []
            if local:
                if passphrase is None:
                    raise AdminError(f"the node's passphrase is needed: set {NODE_PASSPHRASE_VAR}")
                seal = NodeKeys.load(home, passphrase).seal
                statement = RevocationStatement(config.party, key.key_id, now, reason, now)
                envelope = statement.sign(seal)
                peers = _queue_for_peers(session, REVOCATION_TYPE, envelope, now)
                sha: str | None = envelope.payload_sha256
            else:
                sha = None
            revoke_key(session, key_id, reason=reason, now=now)
            _key_event(
                session,
                event="revoked",
                key=key,
                actor=actor,
                now=now,
                reason=reason,
                statement_sha256=sha,
                detail={"announced_to": peers},
            )
            result = RevocationResult(key.key_id, key.kind, key.owner, now, reason, tuple(peers))
    return result


# --- Applying a peer's statement -------------------------------------------------------------


def key_history(session: Session, party: str, kind: KeyKind = KeyKind.SEAL) -> KeyHistory:
    """`party`'s keys of `kind` as a `crypto.rotation.KeyHistory` (signing keys only)."""
    keys = []
    for k in list_keys(session, owner=party, kind=kind):
        if k.kind not in (KeyKind.SEAL, KeyKind.SIGNATORY):
            continue
        not_after = None if k.status is KeyStatus.ACTIVE else k.not_after
        keys.append(
            HistoricKey(VerifyKey.from_dict(k.public), k.not_before, not_after, k.revoked_at)
        )
    return KeyHistory(party, tuple(keys))


def apply_peer_statement(session: Session, party: str, envelope: Envelope, now: datetime) -> str:
    """Verify a key-change statement `party` sent us and update its registry entries.

    Returns "applied" or "unchanged" (the same statement again: a redelivery). Raises
    `KeyChangeRefused` (forged, wrong party, signed by a revoked or unknown key, replayed
    after a later change, naming a key that is not `party`'s).
    """
    now = _aware(now)
    sha = envelope.payload_sha256
    if statement_applied(session, sha):
        # The same statement again: a redelivery (our answer was lost) changes nothing and
        # is acknowledged, but only while what it announced still holds; a rotation
        # replayed after a later one is refused like any other replay.
        if envelope.payload_type == ROTATION_TYPE and not _still_current(session, envelope):
            raise KeyChangeRefused("replay of a superseded rotation statement")
        return "unchanged"
    history = key_history(session, party)
    try:
        if envelope.payload_type == ROTATION_TYPE:
            verified = verify_rotation(envelope, party=party, history=history, now=now)
        elif envelope.payload_type == REVOCATION_TYPE:
            verified = verify_revocation(envelope, party=party, history=history, now=now)
        else:
            raise KeyChangeRefused(f"not a key-change statement: {envelope.payload_type!r}")
    except VerificationError as e:
        raise KeyChangeRefused(e.reason) from e
    statement = verified.statement
    if isinstance(statement, RotationStatement):
        _apply_rotation(session, party, statement, sha, now)
    else:
        _apply_revocation(session, party, statement, sha, now)
    # Kept as signed: a bundle this node exports carries the peer's chain (issue 12).
    keep_peer_statement(
        session,
        party=party,
        payload_type=envelope.payload_type,
        statement_sha256=sha,
        envelope=envelope.to_bytes().decode("utf-8"),
        now=now,
    )
    return "applied"


def _still_current(session: Session, envelope: Envelope) -> bool:
    try:
        statement = RotationStatement.from_payload(loads_canonical(envelope.payload))
        return get_key(session, statement.new_key_id).status is KeyStatus.ACTIVE
    except (VerificationError, NotFound):
        return False


def _apply_rotation(
    session: Session, party: str, statement: RotationStatement, sha: str, now: datetime
) -> None:
    kind = _key_kind(statement.kind)
    try:
        found: Key | None = get_key(session, statement.old_key_id)
    except NotFound:
        found = _pinned_certificate(session, party, statement)
    if found is None:
        raise KeyChangeRefused("the rotated key is not known for this peer")
    old = found
    if old.owner != party or old.kind is not kind or old.store_ref is not None:
        raise KeyChangeRefused("the rotated key is not this peer's key of that kind")
    if old.status is not KeyStatus.ACTIVE:
        # A statement replayed after a later rotation, or one that rotates a revoked key.
        raise KeyChangeRefused(f"the rotated key is {old.status.value}, not active (replay?)")
    try:
        get_key(session, statement.new_key_id)
    except NotFound:
        pass
    else:
        raise KeyChangeRefused("the new key is already known (reused key)")
    overlap_key(session, old.key_id, until=max(statement.overlap_until, now))
    not_after = None
    if statement.kind is RotatedKind.TLS:
        not_after = certificate_not_after(statement.new_key["certificate_pem"].encode("ascii"))
    new = add_key(
        session,
        key_id=statement.new_key_id,
        kind=kind,
        owner=party,
        public=dict(statement.new_key),
        store_ref=None,
        not_before=min(statement.effective, now),
        not_after=not_after,
    )
    if statement.kind is RotatedKind.TLS:
        # The new certificate becomes the peer's pin; the old one stays accepted through
        # the key history until its overlap window ends (`find_peer_by_certificate`).
        peer = get_peer(session, party)
        peer.tls_cert_sha256 = statement.new_key_id
        session.add(peer)
        session.flush()
    _rotation_events(
        session,
        old=old,
        new=new,
        actor=party,
        now=now,
        statement=statement,
        statement_sha256=sha,
        prefix="peer-",
    )


def _rotation_events(
    session: Session,
    *,
    old: Key,
    new: Key,
    actor: str,
    now: datetime,
    statement: RotationStatement,
    statement_sha256: str,
    prefix: str = "",
) -> None:
    """The pair of key events of a rotation, ours or (`prefix="peer-"`) a peer's: the old
    key rotated out towards the new one, the new one rotated in after the old one."""
    detail = {"overlap_until": _iso(statement.overlap_until)}
    _key_event(
        session,
        event=f"{prefix}rotated-out",
        key=old,
        actor=actor,
        now=now,
        statement_sha256=statement_sha256,
        detail=detail | {"next": new.key_id},
    )
    _key_event(
        session,
        event=f"{prefix}rotated-in",
        key=new,
        actor=actor,
        now=now,
        statement_sha256=statement_sha256,
        detail=detail | {"previous": old.key_id},
    )


def _pinned_certificate(session: Session, party: str, statement: RotationStatement) -> Key | None:
    """A peer onboarded before TLS certificates entered the key history: its pinned
    certificate is recorded now, so that its rotation can name it."""
    peer = get_peer(session, party)
    if statement.kind is not RotatedKind.TLS or peer.tls_cert_sha256 != statement.old_key_id:
        return None
    from accord.gateway.node.runtime import _descriptor_pem

    pem = _descriptor_pem(peer)
    return add_key(
        session,
        key_id=statement.old_key_id,
        kind=KeyKind.TLS,
        owner=party,
        public={"alg": "x509", "sha256": statement.old_key_id, "certificate_pem": pem},
        store_ref=None,
        not_before=peer.added_at,
        not_after=certificate_not_after(pem.encode("ascii")),
    )


def _apply_revocation(
    session: Session, party: str, statement: RevocationStatement, sha: str, now: datetime
) -> None:
    try:
        key = get_key(session, statement.key_id)
    except NotFound as e:
        raise KeyChangeRefused("the revoked key is not known for this peer") from e
    if key.owner != party or key.store_ref is not None:
        raise KeyChangeRefused("the revoked key is not this peer's")
    if key.status is KeyStatus.REVOKED:
        raise KeyChangeRefused("the key is already revoked")
    revoke_key(session, key.key_id, reason=statement.reason, now=min(statement.revoked_at, now))
    _key_event(
        session,
        event="peer-revoked",
        key=key,
        actor=party,
        now=now,
        reason=statement.reason,
        statement_sha256=sha,
    )


# --- The running node's keys ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRing(NodeKeys):
    """The keys a running node uses now, plus `home_tls`: the home's current TLS identity.

    `tls` is what the peer API and the delivery client present (the old certificate while a
    TLS rotation is still on its way to some peer); `home_tls` is what the local API
    presents, because local clients trust the home's `tls/tls.crt`, which a rotation
    replaces at once.
    """

    home_tls: TlsIdentity


def load_key_ring(home: Home, db: Database, passphrase: bytes, now: datetime) -> KeyRing:
    """The keys a running node uses now.

    - Encryption: the current key and every rotated-out one still in its overlap window
      (a message sealed to the old key while the rotation was on its way still opens).
    - Seal and TLS: the current ones, except while a rotation of that kind has not yet
      reached every peer and less than half its overlap window has passed: then the old
      one, which every peer still accepts (a peer that has not heard of the new key would
      refuse messages or connections made with it).
    - A seal that is revoked, or retired, is never used: the node refuses to start.
    """
    keys = NodeKeys.load(home, passphrase)
    with db.session(readonly=True) as session:
        local = {k.key_id: k for k in list_keys(session) if k.store_ref is not None}
        holding = _rotations_in_flight(session, now)
    seal, tls = keys.seal, keys.tls
    if RotatedKind.SEAL in holding:
        held = local[holding[RotatedKind.SEAL]]
        seal = open_seal_ref(held.store_ref or "", passphrase, expected_key_id=held.key_id)
    if RotatedKind.TLS in holding:
        tls = _open_tls(Path(local[holding[RotatedKind.TLS]].store_ref or "").parent, passphrase)
    record = local.get(seal.key_id)
    if record is None or not record.status.usable:
        state = "unknown" if record is None else record.status.value
        raise KeyStoreError(
            f"the seal key {seal.key_id[:16]}… is {state} in this node's key history; a "
            "revoked or retired key signs nothing. Restore the current key file"
        )
    previous = [
        _open_encryption(Path(k.store_ref or ""), passphrase)
        for k in local.values()
        if k.kind is KeyKind.ENCRYPTION
        and k.status is KeyStatus.OVERLAP
        and k.key_id != keys.encryption.key_id
    ]
    return KeyRing(seal, DecryptionKeyRing(keys.encryption, previous), tls, keys.tls)


def _rotations_in_flight(session: Session, now: datetime) -> dict[RotatedKind, str]:
    """Rotations (kind -> old key id) whose statement still waits for some peer."""
    found: dict[RotatedKind, str] = {}
    for row in pending_announcements(session):
        if row.payload_type != ROTATION_TYPE:
            continue
        try:
            statement = RotationStatement.from_payload(
                loads_canonical(Envelope.from_bytes(row.envelope.encode("utf-8")).payload)
            )
        except VerificationError:
            continue
        half = statement.effective + (statement.overlap_until - statement.effective) / 2
        if now >= half or statement.kind is RotatedKind.ENCRYPTION:
            continue
        try:
            old = get_key(session, statement.old_key_id)
        except NotFound:
            continue
        if old.status is KeyStatus.OVERLAP and old.store_ref is not None:
            found.setdefault(statement.kind, old.key_id)
    return found


def _open_encryption(path: Path, passphrase: bytes) -> DecryptionKey:
    key = _open_file(path, passphrase)
    if not isinstance(key, DecryptionKey):
        raise KeyStoreError(f"{path} does not hold an X25519 key. Restore it")
    return key


def _open_file(path: Path, passphrase: bytes) -> SigningKey | DecryptionKey:
    try:
        return load_private_key(path.read_bytes(), passphrase)
    except OSError as e:
        raise KeyStoreError(f"cannot read the rotated-out key {path}: {e.strerror}") from e
    except KeyFileError as e:
        raise KeyStoreError(f"cannot open the rotated-out key {path}: {e}") from e


def _open_tls(directory: Path, passphrase: bytes) -> TlsIdentity:
    try:
        return TlsIdentity.load(directory, passphrase)
    except TlsError as e:
        raise KeyStoreError(f"cannot open the rotated-out TLS identity {directory}: {e}") from e


def peer_certificates(session: Session) -> dict[str, bytes]:
    """Every TLS certificate a peer may present now (pinned ones and those in a rotation's
    overlap window), by SHA-256, as PEM."""
    active = {p.party_id for p in list_peers(session) if p.status is PeerStatus.ACTIVE}
    found: dict[str, bytes] = {}
    for key in list_keys(session, kind=KeyKind.TLS):
        pem = key.public.get("certificate_pem")
        if (
            key.owner in active
            and key.store_ref is None
            and key.status.usable
            and isinstance(pem, str)
        ):
            found[key.key_id] = pem.encode("ascii")
    return found


# --- Listing and expiry ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyStatusInfo:
    key_id: str
    kind: KeyKind
    status: KeyStatus
    not_before: datetime
    not_after: datetime | None
    owner: str
    local: bool
    revoked_at: datetime | None
    reason: str | None
    warning: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "kind": self.kind.value,
            "status": self.status.value,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "owner": self.owner,
            "local": self.local,
            "revoked_at": _iso(self.revoked_at),
            "reason": self.reason,
            "warning": self.warning,
        }


def _warning(key: Key, now: datetime) -> str | None:
    if key.status in (KeyStatus.RETIRED, KeyStatus.REVOKED) or key.not_after is None:
        return None
    left = key.not_after - now
    if key.status is KeyStatus.OVERLAP:
        return None if left > timedelta(0) else "overlap window over"
    if left <= timedelta(0):
        return f"EXPIRED on {_iso(key.not_after)}: rotate it now"
    if left <= EXPIRY_WARNING:
        return f"expires in {left.days} day(s), on {_iso(key.not_after)}: rotate it"
    return None


def key_status(home: Home, *, now: datetime, include_peers: bool = False) -> list[KeyStatusInfo]:
    """Every key this node ever held (and, with `include_peers`, every peer key it ever
    trusted), oldest first, with a warning where one expires soon."""
    now = _aware(now)
    with _funnel():
        config = home.load_config()
        with Database.open(config.database) as db, db.session(readonly=True) as session:
            keys = list_keys(session)
    return [
        KeyStatusInfo(
            key_id=k.key_id,
            kind=k.kind,
            status=k.status,
            not_before=k.not_before,
            not_after=k.not_after,
            owner=k.owner,
            local=k.store_ref is not None,
            revoked_at=k.revoked_at,
            reason=k.reason,
            warning=_warning(k, now),
        )
        for k in keys
        if include_peers or k.store_ref is not None
    ]


def expiry_warnings(session: Session, party: str, now: datetime) -> list[str]:
    """One line per key of this node or an active peer that expires within
    `EXPIRY_WARNING` (or has expired): for the health endpoint and the log."""
    lines = []
    peers = {p.party_id for p in list_peers(session) if p.status is PeerStatus.ACTIVE}
    for key in list_keys(session):
        if key.status is not KeyStatus.ACTIVE or (key.owner != party and key.owner not in peers):
            continue
        warning = _warning(key, now)
        if warning:
            whose = "this node's" if key.store_ref is not None else f"{key.owner}'s"
            lines.append(f"{whose} {key.kind.value} key {key.key_id[:16]}…: {warning}")
    return lines


# --- Passphrase --------------------------------------------------------------------------------


def _node_key_files(home: Home, session: Session) -> list[Path]:
    """Every private key file of the node itself (not its signatories': those have their
    owners' passphrases): current and rotated-out."""
    candidates = (home.seal_key, home.encryption_key, home.tls_dir / "tls.key")
    paths = [p for p in candidates if p.exists()]
    for key in list_keys(session):
        if key.store_ref and key.kind is not KeyKind.SIGNATORY and "pkcs11:" not in key.store_ref:
            path = Path(key.store_ref)
            if path not in paths and path.exists():
                paths.append(path)
    return paths


def change_passphrase(
    home: Home,
    *,
    old: bytes,
    new: bytes,
    now: datetime,
    actor: str = "admin",
    kdf_cost: KdfCost | None = None,
) -> int:
    """Re-encrypt every node key file under `new`: all of them or none. Returns how many.

    1. Every file opens with `old` before anything is written (a wrong passphrase is one
       error naming ACCORD_PASSPHRASE, and nothing changes).
    2. Each is written re-encrypted beside itself (`.new`), then all are swapped in; if a
       swap fails, the ones already swapped are put back.
    """
    now = _aware(now)
    if not new:
        raise AdminError("the new passphrase is empty. Give one")
    if new == old:
        raise AdminError("the new passphrase is the old one. Choose another")
    with _funnel():
        config = home.load_config()
        with Database.open(config.database) as db:
            with db.session(readonly=True) as session:
                paths = _node_key_files(home, session)
            staged: list[tuple[Path, Path]] = []
            try:
                for path in paths:  # 1, 2
                    staged.append((path, _reencrypt(path, old, new, home, kdf_cost)))
                _swap_all(staged)
            finally:
                for _, tmp in staged:
                    _remove(tmp)
            with db.session() as session:
                seal = next(
                    (
                        k
                        for k in list_keys(session, owner=config.party, kind=KeyKind.SEAL)
                        if k.status is KeyStatus.ACTIVE
                    ),
                    None,
                )
                if seal is not None:
                    _key_event(
                        session,
                        event="passphrase-changed",
                        key=seal,
                        actor=actor,
                        now=now,
                        detail={"files": len(paths)},
                    )
    return len(paths)


def _reencrypt(path: Path, old: bytes, new: bytes, home: Home, cost: KdfCost | None) -> Path:
    if path.name == "tls.key":
        try:
            identity = TlsIdentity.load(path.parent, old)
        except TlsError as e:
            if "wrong passphrase" in str(e):
                raise _wrong(home) from e
            raise AdminError(f"cannot open {path}: {e}. Restore it") from e
        staging = path.parent.with_name(path.parent.name + ".passphrase")
        _remove(staging)
        identity.save(staging, new)
        return staging
    try:
        key = load_private_key(path.read_bytes(), old)
    except KeyFileError as e:
        if "wrong passphrase" in str(e):
            raise _wrong(home) from e
        raise AdminError(f"{path} is damaged ({e}). Restore it") from e
    tmp = path.with_name(path.name + ".new")
    key.save(tmp, new, cost=cost)
    return tmp


def _swap_all(staged: Sequence[tuple[Path, Path]]) -> None:
    done: list[tuple[Path, Path]] = []
    try:
        for path, tmp in staged:
            source = tmp / "tls.key" if tmp.is_dir() else tmp
            backup = path.with_name(path.name + ".old")
            os.replace(path, backup)
            try:
                os.replace(source, path)
            except BaseException:
                os.replace(backup, path)
                raise
            done.append((path, backup))
    except BaseException:
        for path, backup in reversed(done):
            os.replace(backup, path)
        raise
    for _, backup in done:
        backup.unlink(missing_ok=True)


def _wrong(home: Home) -> AdminError:
    return AdminError(
        f"wrong passphrase for the node keys in {home.root}: nothing was changed. Give the "
        f"current passphrase in {NODE_PASSPHRASE_VAR} or at the prompt"
    )


# --- Helpers -------------------------------------------------------------------------------------


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_events(home: Home) -> Iterator[dict[str, Any]]:
    """The key history's events, oldest first, as JSON-ready documents."""
    with _funnel():
        config = home.load_config()
        with Database.open(config.database) as db, db.session(readonly=True) as session:
            rows = list(list_key_events(session))
    for e in rows:
        yield {
            "at": _iso(e.at),
            "event": e.event,
            "key_id": e.key_id,
            "kind": e.kind.value,
            "owner": e.owner,
            "actor": e.actor,
            "reason": e.reason,
            "statement_sha256": e.statement_sha256,
            "detail": e.detail,
        }


# --- Doctor ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One check of `accord doctor`: what was checked, whether it holds, and why."""

    subject: str
    check: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "check": self.check, "ok": self.ok, "detail": self.detail}


def diagnose(home: Home, *, now: datetime, peer: str | None = None) -> list[Finding]:
    """Explain why this node and each peer (or only `peer`) is or is not trusted: pin,
    descriptor signature, fingerprint, key status, expiry, announcements still queued."""
    now = _aware(now)
    findings: list[Finding] = []
    with _funnel():
        config = home.load_config()
        with Database.open(config.database) as db, db.session(readonly=True) as session:
            if peer is None:
                findings += _diagnose_self(session, config.party, now)
                parties = [p.party_id for p in list_peers(session)]
            else:
                parties = [peer]
            for party in parties:
                findings += _diagnose_peer(session, party, now)
    return findings


def _diagnose_self(session: Session, party: str, now: datetime) -> list[Finding]:
    out: list[Finding] = []
    subject = f"this node ({party})"
    keys = [k for k in list_keys(session, owner=party) if k.store_ref is not None]
    for kind in (KeyKind.SEAL, KeyKind.ENCRYPTION, KeyKind.TLS):
        active = [k for k in keys if k.kind is kind and k.status is KeyStatus.ACTIVE]
        if len(active) != 1:
            out.append(
                Finding(
                    subject,
                    f"{kind.value} key",
                    False,
                    f"{len(active)} active {kind.value} keys; there must be exactly one",
                )
            )
            continue
        warning = _warning(active[0], now)
        out.append(
            Finding(
                subject,
                f"{kind.value} key",
                warning is None or "EXPIRED" not in warning,
                f"{active[0].key_id[:16]}… active" + (f"; {warning}" if warning else ""),
            )
        )
    waiting = pending_announcements(session)
    out.append(
        Finding(
            subject,
            "announcements",
            True if not waiting else False,
            "every key change reached its peers"
            if not waiting
            else f"{len(waiting)} key-change statement(s) not yet delivered to "
            f"{', '.join(sorted({a.peer for a in waiting}))}: start the node or check "
            "that the peer is reachable",
        )
    )
    return out


def _diagnose_peer(session: Session, party: str, now: datetime) -> list[Finding]:
    from accord.crypto.descriptor import verify_descriptor

    out: list[Finding] = []
    try:
        row = get_peer(session, party)
    except NotFound:
        return [
            Finding(
                party,
                "registry",
                False,
                f"{party} is not in the peer registry: add it with `accord peer add`",
            )
        ]
    out.append(
        Finding(
            party,
            "registry",
            row.status is PeerStatus.ACTIVE,
            f"status {row.status.value}"
            + ("" if row.status is PeerStatus.ACTIVE else ": only an active peer is trusted"),
        )
    )
    try:
        descriptor = verify_descriptor(Envelope.from_bytes(row.descriptor.encode("utf-8")))
        out.append(
            Finding(
                party,
                "descriptor signature",
                True,
                f"self-signed by seal {descriptor.seal.key_id[:16]}…, created "
                f"{_iso(descriptor.created)}",
            )
        )
        out.append(
            Finding(
                party,
                "fingerprint",
                True,
                f"{format_fingerprint(descriptor.fingerprint)} (as compared out of "
                "band when the peer was added)",
            )
        )
    except VerificationError as e:
        out.append(
            Finding(
                party,
                "descriptor signature",
                False,
                f"the stored descriptor does not verify ({e.reason}): re-add the peer",
            )
        )
    keys = list_keys(session, owner=party)
    tls = {k.key_id: k for k in keys if k.kind is KeyKind.TLS}
    pinned = tls.get(row.tls_cert_sha256)
    pin_ok = pinned is None or pinned.status.usable
    out.append(
        Finding(
            party,
            "TLS pin",
            pin_ok,
            f"pinned certificate {row.tls_cert_sha256[:16]}…"
            + ("" if pinned is None else f" ({pinned.status.value})"),
        )
    )
    for key in keys:
        check = f"{key.kind.value} key {key.key_id[:16]}…"
        if key.status is KeyStatus.REVOKED:
            out.append(
                Finding(
                    party,
                    check,
                    True,
                    f"revoked at {_iso(key.revoked_at)} ({key.reason}): refused for "
                    "anything claiming a later time",
                )
            )
            continue
        if key.status is KeyStatus.RETIRED:
            out.append(
                Finding(
                    party,
                    check,
                    True,
                    f"retired at {_iso(key.not_after)}: verifies old messages only",
                )
            )
            continue
        warning = _warning(key, now)
        expired = warning is not None and ("EXPIRED" in warning or "over" in warning)
        out.append(
            Finding(
                party,
                check,
                not expired,
                f"{key.status.value}"
                + (f" until {_iso(key.not_after)}" if key.status is KeyStatus.OVERLAP else "")
                + (f"; {warning}" if warning else ""),
            )
        )
    for kind in (KeyKind.SEAL, KeyKind.ENCRYPTION):
        usable = [k for k in keys if k.kind is kind and k.status.usable]
        if not usable:
            out.append(
                Finding(
                    party,
                    f"{kind.value} keys",
                    False,
                    f"no usable {kind.value} key: nothing from {party} is accepted; "
                    "ask its admin for a fresh descriptor",
                )
            )
    return out
