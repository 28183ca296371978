"""Admin actions on a node's home directory: init, peer onboarding, users, key listing.

These are the functions behind `accord init`, `accord peer ...`, `accord user add` and
`accord keys list`. They work on a `Home` whether the node is running or not, return typed
results, and print nothing.

Invariants:
- Every failure is one `AdminError` whose message says what was wrong and what to do next;
  errors of storage, configuration and the key store are funnelled into it with `from e`.
- `init_node` is all or nothing: it refuses a non-empty home, and if any step fails it
  removes everything it created. Database rows are written last, in one transaction.
- Private keys are written only through `crypto/` (encrypted files); the database holds
  public keys and the path of each private key file. A signatory's key is encrypted under
  the signatory's own passphrase, never the node's.
- API tokens are shown once, to the caller; only their SHA-256 hex is stored.
- A peer is trusted only from a descriptor whose self-signature verifies, and, when the
  caller gives a fingerprint compared out of band, whose fingerprint matches it. A
  descriptor older than the one already trusted for that Party is refused (rollback).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session

from accord.crypto import (
    Envelope,
    KdfCost,
    KeyFileError,
    SigningKey,
    VerificationError,
    VerifyKey,
    load_private_key,
)
from accord.crypto.bundle import LogEvent
from accord.crypto.descriptor import (
    NodeDescriptor,
    Signatory,
    format_fingerprint,
    verify_descriptor,
)
from accord.crypto.tls import TlsError, certificate_not_after
from accord.gateway.audit import log as _audit
from accord.gateway.keys.store import (
    NODE_PASSPHRASE_VAR,
    SIGNATORY_PASSPHRASE_VAR,
    KeyStoreError,
    NodeKeys,
    save_signatory,
)
from accord.gateway.node.config import ConfigError, Home, HostPort, NodeConfig
from accord.policy import Profile, ProfileError, profile_or_default
from accord.storage import (
    Database,
    KeyKind,
    KeyStatus,
    NotFound,
    PeerStatus,
    Role,
    StorageError,
    StorageUnavailable,
    find_peer_by_certificate,
    get_key,
    get_peer,
    get_user,
    retire_key,
)
from accord.storage import add_key as _store_key
from accord.storage import add_peer as _store_peer
from accord.storage import add_user as _store_user
from accord.storage import list_keys as _stored_keys

__all__ = [
    "ADMIN_USER",
    "CLEARANCES",
    "AdminError",
    "InitResult",
    "KeyInfo",
    "PeerResult",
    "UserResult",
    "add_peer",
    "add_user",
    "check_new_home",
    "export_descriptor",
    "init_node",
    "list_keys",
    "new_token",
    "parse_clearance",
    "read_descriptor",
    "token_sha256",
]

ADMIN_USER = "admin"
# The default profile's levels, lowest first (CLI.md). SECRET and above are state secrets
# (agreement art. 7.5), out of the gateway's scope.
CLEARANCES = ("OFFICIAL", "RESTRICTED", "CONFIDENTIAL")
_STATE_SECRET_LEVELS = frozenset({"SECRET", "TOP SECRET", "TOP-SECRET", "TOP_SECRET", "TOPSECRET"})
_TOKEN_PREFIX = "acc_"  # noqa: S105 - a prefix, not a token
_MAX_PARTY = 64  # the TLS certificate's common name bound (RFC 5280 ub-common-name)
_MAX_NAME = 500  # the descriptor's bound on a node's display name
_MAX_USER = 200  # the descriptor's bound on a signatory's name


class AdminError(Exception):
    """An admin action was refused or failed; the message says what to do next."""


@dataclass(frozen=True, slots=True)
class InitResult:
    party: str
    node_url: str
    ca_file: Path
    admin_token: str
    fingerprint: str
    peer_url: str
    admin_user: str
    home: Path


@dataclass(frozen=True, slots=True)
class PeerResult:
    party: str
    name: str
    endpoint: str
    fingerprint: str
    # "added", "updated" (a newer descriptor, or a re-activated peer) or "unchanged".
    change: str


@dataclass(frozen=True, slots=True)
class UserResult:
    user: str
    role: Role
    token: str
    clearance: str
    signatory_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    kind: KeyKind
    status: KeyStatus
    not_before: datetime
    not_after: datetime | None
    owner: str
    local: bool


# --- Tokens ------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh API token: "acc_" and 32 random bytes in unpadded base64url."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return _TOKEN_PREFIX + raw


def token_sha256(token: str) -> str:
    """What the database stores of a token. Tokens are 32 random bytes, so a slow password
    hash would add nothing (see `storage.User`)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- Init -------------------------------------------------------------------------------


def init_node(
    home_dir: Path,
    *,
    party: str,
    name: str,
    listen: str | HostPort,
    local: str | HostPort | None = None,
    database: str | None = None,
    profile: Path | None = None,
    passphrase: bytes,
    now: datetime,
    kdf_cost: KdfCost | None = None,
) -> InitResult:
    """Create a node in `home_dir` (new or empty): keys, TLS identity, config, database,
    and the first admin user, whose token is returned once.

    `local` defaults to the next port after `listen`, on the same host if that host is a
    loopback address and on 127.0.0.1 otherwise: the users' API is not exposed on the
    peers' interface unless asked for. `database` defaults to SQLite in the home.
    `kdf_cost` is the Argon2id cost of the seal and encryption key files (default
    interactive); tests lower it.
    """
    # 1. Check every input before anything is created, so a typo creates nothing.
    now = _aware(now)
    party = _check_party(party)
    name = _check_text(name, "--name", _MAX_NAME)
    listen_at = _host_port(listen, "--listen")
    local_at = _default_local(listen_at) if local is None else _host_port(local, "--local")
    if local_at == listen_at:
        raise AdminError(f"--listen and --local are both {listen_at}. Give --local another port")
    if not passphrase:
        raise AdminError(f"the passphrase is empty. Set {NODE_PASSPHRASE_VAR} or type one")
    profile_bytes = _read_profile(profile) if profile is not None else None
    home = Home(Path(os.path.abspath(home_dir.expanduser())))
    database_url = database or home.sqlite_url()
    with _funnel():
        db = Database.open(database_url)
    # 2. Claim the home; from here on, any failure removes what was created.
    undo = _claim_home(home.root)
    try:
        with _funnel(), db:
            for folder in (home.seal_key.parent, home.signatories, home.blobs):
                folder.mkdir(mode=0o700, exist_ok=True)
            hosts = _certificate_hosts(listen_at, local_at)
            keys = NodeKeys.generate(party, hosts=hosts, now=now)
            keys.save(home, passphrase, cost=kdf_cost)
            if profile_bytes is not None:
                _write_private(home.profile_file, profile_bytes)
            config = NodeConfig(
                party=party, name=name, listen=listen_at, local=local_at, database=database_url
            )
            home.save_config(config)
            home.config_file.chmod(0o600)  # it may hold a database password
            descriptor = _descriptor(config, keys, (), now, _profile_digest(home))
            token = new_token()
            # 3. The database last, in one transaction: an error before the commit leaves
            #    no row behind, even on a PostgreSQL server init cannot delete.
            db.migrate()
            with db.session() as session:
                if _stored_keys(session):
                    raise AdminError(
                        "the database already holds a node's keys. Give an empty database "
                        "with --database, or drop that node's database first"
                    )
                _register_node_keys(session, home, party, keys, now)
                _store_user(
                    session,
                    name=ADMIN_USER,
                    role=Role.ADMIN,
                    clearance=CLEARANCES[0],
                    token_sha256=token_sha256(token),
                    now=now,
                )
                _audit.record(
                    session, _user_event(party, ADMIN_USER, Role.ADMIN, CLEARANCES[0], now)
                )
    except BaseException:
        undo()
        raise
    return InitResult(
        party=party,
        node_url=config.local_url,
        # The local API is served over HTTPS with the node's own certificate, so a client
        # trusts exactly that certificate.
        ca_file=home.tls_dir / "tls.crt",
        admin_token=token,
        fingerprint=format_fingerprint(descriptor.fingerprint),
        peer_url=config.peer_url,
        admin_user=ADMIN_USER,
        home=home.root,
    )


def check_new_home(home_dir: Path) -> None:
    """Refuse a home that `init_node` would refuse, before anyone types a passphrase."""
    root = Path(os.path.abspath(home_dir.expanduser()))
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise AdminError(f"{root} exists and is not a directory. Choose another --home")
        if any(root.iterdir()):
            raise AdminError(
                f"{root} is not empty. Choose a new or empty directory: init never "
                "overwrites a node"
            )


def _claim_home(root: Path) -> Callable[[], None]:
    """Create `root` (or accept it empty) and return how to undo exactly that."""
    check_new_home(root)
    if root.exists():
        root.chmod(0o700)

        def empty_again() -> None:
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

        return empty_again
    top = root
    while not top.parent.exists():
        top = top.parent
    try:
        root.mkdir(mode=0o700, parents=True)
    except OSError as e:
        raise AdminError(f"cannot create {root}: {e.strerror}. Choose another --home") from e
    return lambda: shutil.rmtree(top, ignore_errors=True)


def _register_node_keys(
    session: Session, home: Home, party: str, keys: NodeKeys, now: datetime
) -> None:
    _store_key(
        session,
        key_id=keys.seal.key_id,
        kind=KeyKind.SEAL,
        owner=party,
        public=keys.seal.verify_key().to_dict(),
        store_ref=str(home.seal_key),
        not_before=now,
    )
    _store_key(
        session,
        key_id=keys.encryption.key_id,
        kind=KeyKind.ENCRYPTION,
        owner=party,
        public=keys.encryption.recipient().to_dict(),
        store_ref=str(home.encryption_key),
        not_before=now,
    )
    _store_key(
        session,
        key_id=keys.tls.fingerprint,
        kind=KeyKind.TLS,
        owner=party,
        public={
            "alg": "x509",
            "sha256": keys.tls.fingerprint,
            "certificate_pem": keys.tls.certificate_pem.decode("ascii"),
        },
        store_ref=str(home.tls_dir / "tls.key"),
        not_before=now,
        not_after=keys.tls.not_after,
    )
    _audit.record_all(
        session,
        (
            _audit.key_event(
                _audit.EventKind.KEY_ADDED, party, now, key_id=k, key_kind=kind, owner=party
            )
            for k, kind in (
                (keys.seal.key_id, KeyKind.SEAL),
                (keys.encryption.key_id, KeyKind.ENCRYPTION),
                (keys.tls.fingerprint, KeyKind.TLS),
            )
        ),
    )


def _default_local(listen: HostPort) -> HostPort:
    if listen.port >= 65535:
        raise AdminError(f"--listen port {listen.port} has no next port. Give --local")
    host = listen.host if listen.is_loopback() else "127.0.0.1"
    return HostPort(host, listen.port + 1)


def _certificate_hosts(*addresses: HostPort) -> list[str]:
    hosts: list[str] = []
    for address in addresses:
        hosts.append(address.host)
        if address.is_loopback():
            hosts += ["localhost", "127.0.0.1"]
    return list(dict.fromkeys(hosts))


def _read_profile(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AdminError(f"cannot read --profile {path}: {e.strerror}. Check the path") from e
    try:
        Profile.parse(data.decode("utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise AdminError(f"--profile {path} is not UTF-8 text. Check the file") from e
    except ProfileError as e:
        raise AdminError(f"{e}. Fix the profile or use deploy/profiles/reference.toml") from e
    return data


def _profile_digest(home: Home) -> str:
    """The digest of the node's agreement profile (the reference one unless `init
    --profile` gave another); peers compare it before they talk at all."""
    try:
        return profile_or_default(home.profile_file).digest
    except ProfileError as e:
        raise AdminError(f"{e}. Restore the node's profile.toml") from e


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# --- Descriptors and peers ----------------------------------------------------------------


def export_descriptor(home: Home, passphrase: bytes, now: datetime) -> bytes:
    """This node's descriptor, signed by its seal: the bytes to hand to peers."""
    now = _aware(now)
    with _funnel():
        config = home.load_config()
        keys = NodeKeys.load(home, passphrase)
        with _open_db(config) as db, db.session(readonly=True) as session:
            # The seal on disk must be the one the database says is active: a restored
            # backup of only one of them would otherwise announce a key no one expects.
            active = _stored_keys(session, owner=config.party, kind=KeyKind.SEAL)
            if keys.seal.key_id not in {k.key_id for k in active if k.status is KeyStatus.ACTIVE}:
                raise AdminError(
                    f"the seal key in {home.seal_key} is not this node's active seal in the "
                    "database. Restore the matching key file or database backup"
                )
            signatories = _local_signatories(session)
        envelope = _descriptor(config, keys, signatories, now, _profile_digest(home)).sign(
            keys.seal
        )
        return envelope.to_bytes()


def _local_signatories(session: Session) -> list[Signatory]:
    """Active signatory keys held on this node, with their enabled users' names and roles."""
    found: list[Signatory] = []
    for key in _stored_keys(session, kind=KeyKind.SIGNATORY, status=KeyStatus.ACTIVE):
        if key.store_ref is None:  # a peer's signatory
            continue
        try:
            user = get_user(session, key.owner)
        except NotFound:
            continue
        if user.disabled:
            continue
        found.append(Signatory(user.name, user.role.value, VerifyKey.from_dict(key.public)))
    return found


def _descriptor(
    config: NodeConfig,
    keys: NodeKeys,
    signatories: Sequence[Signatory],
    now: datetime,
    profile_sha256: str,
) -> NodeDescriptor:
    return NodeDescriptor(
        party=config.party,
        name=config.name,
        endpoint=config.peer_url,
        seal=keys.seal.verify_key(),
        encryption=keys.encryption.recipient(),
        tls_certificate_pem=keys.tls.certificate_pem.decode("ascii"),
        tls_certificate_sha256=keys.tls.fingerprint,
        signatories=tuple(signatories),
        created=now,
        profile_sha256=profile_sha256,
    )


def read_descriptor(data: bytes, *, fingerprint: str | None = None) -> NodeDescriptor:
    """Parse a descriptor and verify its self-signature (and `fingerprint`, if given).

    The result says who the descriptor claims to be; only a fingerprint compared with the
    peer out of band makes that claim trustworthy.
    """
    # 1. Strict parse and self-signature: a changed byte or a foreign signature stops here.
    try:
        envelope = Envelope.from_bytes(data.strip(b" \t\r\n"))
        descriptor = verify_descriptor(envelope)
    except VerificationError as e:
        raise AdminError(
            f"the descriptor does not verify ({e.reason}). It was altered or is not an Accord "
            "descriptor: ask the peer to export it again"
        ) from e
    # 2. The fingerprint the admin compared out of band (stops a substituted descriptor).
    if fingerprint is not None:
        try:
            verify_descriptor(envelope, fingerprint=fingerprint)
        except VerificationError as e:
            raise AdminError(
                "fingerprint mismatch: this descriptor is not the one whose fingerprint you "
                "were given. Do not add it; compare fingerprints with the peer's admin again "
                "over another channel"
            ) from e
    return descriptor


def add_peer(
    home: Home, descriptor_bytes: bytes, *, fingerprint: str | None, now: datetime
) -> PeerResult:
    """Trust a peer from its descriptor (or update it from a newer one).

    With `fingerprint` (the one compared out of band) a mismatch is refused. Without it the
    caller vouches that a person compared the fingerprint (the CLI asks).
    """
    now = _aware(now)
    descriptor = read_descriptor(descriptor_bytes, fingerprint=fingerprint)
    text = descriptor_bytes.strip(b" \t\r\n").decode("utf-8")
    with _funnel():
        config = home.load_config()
        # 3. Never trust a descriptor of our own Party as a peer (a reflected descriptor).
        if descriptor.party == config.party:
            raise AdminError(
                f"this descriptor is this node's own (party {config.party}). "
                "Add the other Party's descriptor"
            )
        # 3a. Both nodes must hold the same agreement profile (same Parties, markings,
        #     periods): a peer under another agreement is refused before it is trusted.
        ours = _profile_digest(home)
        if descriptor.profile_sha256 != ours:
            raise AdminError(
                f"{descriptor.party} runs another agreement profile "
                f"({(descriptor.profile_sha256 or 'none')[:16]}…, ours {ours[:16]}…). "
                "Agree on one profile file and `accord init --profile` both nodes with it"
            )
        with _open_db(config) as db, db.session() as session:
            change = _store_descriptor(session, descriptor, text, now)
            if change != "unchanged":
                _audit.record(
                    session,
                    _audit.event(
                        _audit.EventKind.PEER_ADDED
                        if change == "added"
                        else _audit.EventKind.PEER_UPDATED,
                        config.party,
                        now,
                        peer=descriptor.party,
                        digests={
                            "descriptor": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                            "fingerprint": descriptor.fingerprint,
                        },
                        detail={"endpoint": descriptor.endpoint},
                    ),
                )
    return PeerResult(
        party=descriptor.party,
        name=descriptor.name,
        endpoint=descriptor.endpoint,
        fingerprint=format_fingerprint(descriptor.fingerprint),
        change=change,
    )


def _store_descriptor(
    session: Session, descriptor: NodeDescriptor, text: str, now: datetime
) -> str:
    party = descriptor.party
    try:
        existing = get_peer(session, party)
    except NotFound:
        existing = None
    if existing is not None and existing.descriptor == text:
        if existing.status is PeerStatus.ACTIVE:
            return "unchanged"
        existing.status = PeerStatus.ACTIVE
        session.add(existing)
        session.flush()
        return "updated"
    # 4. A newer descriptor replaces the trusted one, an older one is a rollback.
    if existing is not None:
        try:
            trusted = verify_descriptor(Envelope.from_bytes(existing.descriptor.encode("utf-8")))
        except VerificationError as e:
            raise AdminError(
                f"the stored descriptor of {party} no longer verifies ({e.reason}). "
                "Restore the database from a backup"
            ) from e
        if descriptor.created < trusted.created:
            raise AdminError(
                f"this descriptor of {party} is older than the one already trusted "
                f"({trusted.created:%Y-%m-%d %H:%M:%S}Z). Ask the peer for its current descriptor"
            )
    # 5. The pinned TLS certificate and every key must be this peer's alone: a descriptor
    #    that names our keys or another Party's could make us attribute their signatures.
    try:
        holder = find_peer_by_certificate(session, descriptor.tls_certificate_sha256)
    except NotFound:
        holder = None
    if holder is not None and holder.party_id != party:
        raise AdminError(
            f"the descriptor's TLS certificate is already pinned for {holder.party_id}. "
            "Do not trust it; ask the peer's admin"
        )
    wanted: dict[str, tuple[KeyKind, dict[str, object]]] = {
        descriptor.seal.key_id: (KeyKind.SEAL, dict(descriptor.seal.to_dict())),
        descriptor.encryption.key_id: (KeyKind.ENCRYPTION, dict(descriptor.encryption.to_dict())),
    }
    for signatory in descriptor.signatories:
        public: dict[str, object] = dict(signatory.key.to_dict())
        public.update(signatory=signatory.name, role=signatory.role)
        wanted.setdefault(signatory.key.key_id, (KeyKind.SIGNATORY, public))
    # The TLS certificate is in the key history too, so that a TLS rotation can name it.
    wanted.setdefault(
        descriptor.tls_certificate_sha256,
        (
            KeyKind.TLS,
            {
                "alg": "x509",
                "sha256": descriptor.tls_certificate_sha256,
                "certificate_pem": descriptor.tls_certificate_pem,
            },
        ),
    )
    for key_id in wanted:
        try:
            known = get_key(session, key_id)
        except NotFound:
            continue
        kind = wanted[key_id][0]
        if known.owner != party or known.store_ref is not None or known.kind != kind:
            raise AdminError(
                f"the descriptor names key {key_id[:16]}…, which is already known here as a "
                f"{known.kind.value} key of {known.owner}. Do not trust it; ask the peer's admin"
            )
        if known.status is KeyStatus.REVOKED:
            raise AdminError(
                f"the descriptor names key {key_id[:16]}…, which was revoked. "
                "Ask the peer for a descriptor with its current keys"
            )
    # 6. Store: the peer row, then the key history (new keys in, dropped keys retired).
    if existing is None:
        _store_peer(
            session,
            party_id=party,
            name=descriptor.name,
            endpoint_url=descriptor.endpoint,
            tls_cert_sha256=descriptor.tls_certificate_sha256,
            descriptor=text,
            now=now,
            status=PeerStatus.ACTIVE,
        )
    else:
        existing.name = descriptor.name
        existing.endpoint_url = descriptor.endpoint
        existing.tls_cert_sha256 = descriptor.tls_certificate_sha256
        existing.descriptor = text
        existing.status = PeerStatus.ACTIVE
        session.add(existing)
        session.flush()
    held = {key.key_id: key for key in _stored_keys(session, owner=party) if key.store_ref is None}
    for key_id, key in held.items():
        if key_id not in wanted and key.status is KeyStatus.ACTIVE:
            retire_key(session, key_id, now=now)
            _audit.record(
                session,
                _audit.key_event(
                    _audit.EventKind.KEY_RETIRED,
                    _own_party(session),
                    now,
                    key_id=key_id,
                    key_kind=key.kind,
                    owner=party,
                ),
            )
        elif key_id in wanted and key.status is KeyStatus.RETIRED:
            key.status, key.not_after = KeyStatus.ACTIVE, None
            session.add(key)
    for key_id, (kind, public) in wanted.items():
        if key_id not in held:
            _store_key(
                session,
                key_id=key_id,
                kind=kind,
                owner=party,
                public=public,
                store_ref=None,
                not_before=min(descriptor.created, now),
                not_after=_certificate_expiry(public) if kind is KeyKind.TLS else None,
            )
            _audit.record(
                session,
                _audit.key_event(
                    _audit.EventKind.KEY_ADDED,
                    _own_party(session),
                    now,
                    key_id=key_id,
                    key_kind=kind,
                    owner=party,
                ),
            )
    session.flush()
    return "added" if existing is None else "updated"


def _certificate_expiry(public: dict[str, object]) -> datetime | None:
    try:
        return certificate_not_after(str(public["certificate_pem"]).encode("ascii"))
    except (KeyError, TlsError):
        return None


# --- Users --------------------------------------------------------------------------------


def parse_clearance(level: str) -> str:
    """The clearance level named by `level` (case-insensitive); state secrets are refused."""
    normalised = " ".join(level.split()).upper()
    if normalised in _STATE_SECRET_LEVELS:
        raise AdminError(
            f"clearance {level} is refused: state secrets (agreement art. 7.5) are out of "
            f"the gateway's scope. Use {', '.join(CLEARANCES)}"
        )
    if normalised not in CLEARANCES:
        raise AdminError(f"unknown clearance {level!r}. Use one of {', '.join(CLEARANCES)}")
    return normalised


def add_user(
    home: Home,
    name: str,
    *,
    role: Role | str,
    clearance: str = CLEARANCES[0],
    signatory_passphrase: bytes | None = None,
    now: datetime,
    kdf_cost: KdfCost | None = None,
    signatory_token_uri: str | None = None,
) -> UserResult:
    """Create a local user and return its API token (shown once).

    A signatory also gets a personal Ed25519 key in `home.signatory_key(name)`, encrypted
    under `signatory_passphrase`, which must not be the node's passphrase. With
    `signatory_token_uri` the key is generated on that PKCS#11 token instead, and
    `signatory_passphrase` is the token's PIN, which only the signatory knows: the home and
    the database keep only the URI. Peers learn the key from the next exported descriptor.
    """
    now = _aware(now)
    name = _check_user_name(name)
    try:
        role = Role(role)
    except ValueError as e:
        roles = ", ".join(r.value for r in Role)
        raise AdminError(f"unknown role {role!r}. Use one of {roles}") from e
    level = parse_clearance(clearance)
    if role is Role.SIGNATORY and not signatory_passphrase:
        raise AdminError(
            f"a signatory needs a passphrase of their own for their key. Set "
            f"{SIGNATORY_PASSPHRASE_VAR} or type it at the prompt"
        )
    if role is not Role.SIGNATORY and signatory_passphrase is not None:
        raise AdminError(f"only a signatory has a personal key; {name} is {role.value}")
    token = new_token()
    key_path: Path | None = None
    with _funnel():
        config = home.load_config()
        with _open_db(config) as db:
            try:
                with db.session() as session:
                    try:
                        get_user(session, name)
                    except NotFound:
                        pass
                    else:
                        raise AdminError(f"user {name} already exists. Choose another name")
                    _store_user(
                        session,
                        name=name,
                        role=role,
                        clearance=level,
                        token_sha256=token_sha256(token),
                        now=now,
                    )
                    _audit.record(session, _user_event(config.party, name, role, level, now))
                    key_id = None
                    if signatory_passphrase and signatory_token_uri is not None:
                        _refuse_node_passphrase(home, signatory_passphrase)
                        public = _token_signatory_key(signatory_token_uri, signatory_passphrase)
                        key_id = public.key_id
                        _store_key(
                            session,
                            key_id=public.key_id,
                            kind=KeyKind.SIGNATORY,
                            owner=name,
                            public=public.to_dict(),
                            store_ref=signatory_token_uri,
                            not_before=now,
                        )
                    elif signatory_passphrase:
                        _refuse_node_passphrase(home, signatory_passphrase)
                        key = SigningKey.generate()
                        key_path = save_signatory(
                            home, name, key, signatory_passphrase, cost=kdf_cost
                        )
                        key_id = key.key_id
                        _store_key(
                            session,
                            key_id=key.key_id,
                            kind=KeyKind.SIGNATORY,
                            owner=name,
                            public=key.verify_key().to_dict(),
                            store_ref=str(key_path),
                            not_before=now,
                        )
                        _audit.record(
                            session,
                            _audit.key_event(
                                _audit.EventKind.KEY_ADDED,
                                config.party,
                                now,
                                key_id=key.key_id,
                                key_kind=KeyKind.SIGNATORY,
                                owner=name,
                                user=name,
                            ),
                        )
            except BaseException:
                # The key file is only kept together with its committed database rows.
                if key_path is not None:
                    key_path.unlink(missing_ok=True)
                raise
    return UserResult(user=name, role=role, token=token, clearance=level, signatory_key_id=key_id)


def _user_event(party: str, name: str, role: Role, clearance: str, now: datetime) -> LogEvent:
    return _audit.event(
        _audit.EventKind.USER_ADDED,
        party,
        now,
        user=name,
        detail={"role": role.value, "clearance": clearance},
    )


def _own_party(session: Session) -> str:
    """This node's party: the owner of its seal key (the one with a private half here)."""
    for key in _stored_keys(session):
        if key.kind is KeyKind.SEAL and key.store_ref is not None:
            return key.owner
    raise AdminError("this database holds no node seal key: run `accord init` first")


def _token_signatory_key(uri: str, pin: bytes) -> VerifyKey:
    """Generate a signatory's key on their token with the PIN they gave."""
    try:
        from accord.crypto.pkcs11 import Pkcs11Uri, TokenError, generate_token_key
        from accord.gateway.keys.store import token_uri_with_pin
    except ImportError as e:
        raise AdminError("python-pkcs11 is not installed: pip install python-pkcs11") from e
    try:
        if Pkcs11Uri.parse(uri).pin_value is not None:
            raise AdminError(
                "the token URI carries a PIN: the signatory types it (use "
                f"pin-source=env:{SIGNATORY_PASSPHRASE_VAR}); it is never stored"
            )
        public: VerifyKey = generate_token_key(token_uri_with_pin(uri, pin))
    except TokenError as e:
        raise AdminError(f"cannot make the signatory's key on the token: {e}") from e
    return public


def _refuse_node_passphrase(home: Home, passphrase: bytes) -> None:
    """A signatory's key must not open with the node's passphrase: whoever runs the node
    would otherwise be able to sign in the signatory's name (art. 4.4)."""
    # The seal file, or the encryption key's when the seal lives on a token.
    path = home.seal_key if home.seal_key.exists() else home.encryption_key
    try:
        load_private_key(path.read_bytes(), passphrase)
    except (KeyFileError, OSError):
        return
    raise AdminError(
        f"the signatory's passphrase is the node's passphrase. Set {SIGNATORY_PASSPHRASE_VAR} "
        "to a passphrase only the signatory knows"
    )


# --- Keys ---------------------------------------------------------------------------------


def list_keys(home: Home, *, include_peers: bool = False) -> list[KeyInfo]:
    """Every key this node (and its users) ever held, oldest first; with `include_peers`,
    also the peers' keys it trusts or trusted."""
    with _funnel():
        config = home.load_config()
        with _open_db(config) as db, db.session(readonly=True) as session:
            keys = _stored_keys(session)
    return [
        KeyInfo(
            key_id=k.key_id,
            kind=k.kind,
            status=k.status,
            not_before=k.not_before,
            not_after=k.not_after,
            owner=k.owner,
            local=k.store_ref is not None,
        )
        for k in keys
        if include_peers or k.store_ref is not None
    ]


# --- Helpers ------------------------------------------------------------------------------


def _open_db(config: NodeConfig) -> Database:
    return Database.open(config.database)


@contextlib.contextmanager
def _funnel() -> Iterator[None]:
    """Turn the errors of the layers below into `AdminError`, keeping the cause."""
    try:
        yield
    except AdminError:
        raise
    except (KeyStoreError, ConfigError) as e:
        raise AdminError(str(e)) from e
    except StorageUnavailable as e:
        raise AdminError(
            f"the database cannot be reached ({_one_line(e)}). Check the database URL in "
            "config.toml (or --database) and that the server is running"
        ) from e
    except StorageError as e:
        raise AdminError(f"database error ({_one_line(e)}). Check the database") from e
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        raise AdminError(f"file error on{where}: {e.strerror}. Check paths and permissions") from e


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _host_port(value: str | HostPort, option: str) -> HostPort:
    if isinstance(value, HostPort):
        return value
    try:
        return HostPort.parse(value, option)
    except ConfigError as e:
        raise AdminError(str(e)) from e


def _check_party(party: str) -> str:
    if (
        not 1 <= len(party) <= _MAX_PARTY
        or not party.isprintable()
        or any(c.isspace() or c in "/\\" for c in party)
    ):
        raise AdminError(
            f"--party {party!r} is not a party id. Use 1 to {_MAX_PARTY} printable characters "
            "without spaces or slashes (Cyrillic is fine)"
        )
    return party


def _check_text(value: str, option: str, limit: int) -> str:
    value = value.strip()
    if not 1 <= len(value) <= limit or not value.isprintable():
        raise AdminError(f"{option} must be 1 to {limit} printable characters")
    return value


def _check_user_name(name: str) -> str:
    if (
        not 1 <= len(name) <= _MAX_USER
        or name != name.strip()
        or not name.isprintable()
        or name.startswith(".")
        or any(c in "/\\" for c in name)
    ):
        raise AdminError(
            f"user name {name!r} is not usable. Use 1 to {_MAX_USER} printable characters, "
            "without slashes, not starting with '.' or a space"
        )
    return name
