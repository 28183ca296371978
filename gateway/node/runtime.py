"""The running node's context: everything a request handler or the worker needs, injected.

`Node` holds the configuration, database, blob store, the node's own keys, a clock and a
peer directory. Nothing in `gateway/` reaches for module state: tests build several nodes
in one process, each with its own `Node`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import Session, col, select

from accord.crypto import DecryptionKey, Envelope, RecipientKey, Signer, VerifyKey
from accord.crypto.tls import TlsIdentity
from accord.gateway.keys.store import NodeKeys
from accord.gateway.node.config import Home, NodeConfig
from accord.gateway.node.flow import Backlog
from accord.gateway.node.groupcommit import GroupCommit
from accord.policy import Profile, default_profile
from accord.storage import (
    BlobStore,
    Database,
    Key,
    KeyKind,
    KeyStatus,
    Peer,
    PeerStatus,
    User,
    find_user_by_token_hash,
    list_keys,
)
from accord.storage import get_peer as _get_peer

__all__ = ["PROFILE_HEADER", "Node", "PeerKeys", "utc_now"]

log = logging.getLogger("accord.node")
# Every peer request carries the sender's profile digest; a node under another agreement
# profile is refused (uniformly) before anything else is read.
PROFILE_HEADER = "accord-profile"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PeerKeys:
    """The public keys this node trusts for one peer, read from the peer registry."""

    party: str
    endpoint: str
    tls_cert_sha256: str
    tls_certificate_pem: str
    seals: dict[str, VerifyKey]
    signatories: dict[str, VerifyKey]
    encryption: RecipientKey

    @property
    def verify_keys(self) -> dict[str, VerifyKey]:
        return self.seals | self.signatories


class PeerUnknown(Exception):
    """No active peer by that party id."""


@dataclass
class Node:
    home: Home
    config: NodeConfig
    db: Database
    blobs: BlobStore
    seal: Signer
    encryption: DecryptionKey
    tls: TlsIdentity
    clock: Callable[[], datetime] = utc_now
    # The agreement profile (markings, periods, Parties); peers must hold the same one.
    profile: Profile = field(default_factory=default_profile)
    # Reopens the node's keys from its home (it holds the passphrase): the key upkeep task
    # calls it when the key history changes (`gateway._keys.load_key_ring`).
    key_loader: Callable[[datetime], NodeKeys] | None = None
    # A local user found by API token is remembered this long (`user_by_token`).
    user_cache_seconds: float = 2.0
    # Set by `accord serve`: trusts, in the running peer API's TLS context, the peer
    # certificates the registry gained (a peer's TLS rotation), before its statement is
    # acknowledged (gateway/_serve.py).
    refresh_pins: Callable[[], Awaitable[None]] | None = None
    # A peer's keys as last built, with the registry stamp they were built from: reused
    # only while the stamp is unchanged (`peer_keys`).
    _peer_cache: dict[str, tuple[object, PeerKeys]] = field(default_factory=dict)
    _user_cache: dict[str, tuple[float, User]] = field(default_factory=dict)
    _wake: asyncio.Event | None = None
    _writes: GroupCommit | None = None
    _executor: ThreadPoolExecutor | None = None
    # Flow control: the local API yields to the delivery worker when it is far behind.
    backlog: Backlog = field(default_factory=Backlog)

    @property
    def executor(self) -> ThreadPoolExecutor:
        """A small pool for short blocking jobs (sealing a message without attachments)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="seal")
        return self._executor

    @property
    def writes(self) -> GroupCommit:
        """Group commit for the writes of concurrent requests."""
        if self._writes is None:
            self._writes = GroupCommit(self.db)
        return self._writes

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._writes is not None:
            self._writes.close()
        self.db.close()

    @property
    def party(self) -> str:
        return self.config.party

    # -- Local users -----------------------------------------------------------------

    def cached_user(self, token_sha256: str) -> User | None:
        """The enabled user holding this token as found in the last `user_cache_seconds`,
        else None (look it up with `user_by_token`). Users are managed by `accord user`
        in another process too, so a change takes effect here within that time; a token
        not found is never remembered, so a new user's works at once."""
        cached = self._user_cache.get(token_sha256)
        if cached and time.monotonic() - cached[0] < self.user_cache_seconds:
            return cached[1]
        return None

    def user_by_token(self, token_sha256: str) -> User | None:
        """The enabled user holding the token with this SHA-256 hex, read from the store
        (blocking) and remembered for `cached_user`."""
        with self.db.session(readonly=True) as session:
            user = find_user_by_token_hash(session, token_sha256)
        if user is None:
            self._user_cache.pop(token_sha256, None)
        else:
            self._user_cache[token_sha256] = (time.monotonic(), user)
        return user

    # -- Peers -----------------------------------------------------------------------

    def peer_keys(self, party: str) -> PeerKeys:
        """The trusted keys of `party`, as the peer registry holds them *now*.

        `accord peer add|suspend` and `accord keys revoke` run in another process and the
        registry is the single source of truth: the keys built last time are reused only
        while the registry's stamp for the party (its status, each key's id, status and
        `not_after`, and which keys are within validity now) is unchanged, checked on every
        call with one narrow query. A revoked or expired key is never trusted, not even
        for the rest of a cache period."""
        now = self.clock()
        with self.db.session(readonly=True) as session:
            stamp = _registry_stamp(session, party, now)
            cached = self._peer_cache.get(party)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                peer = _get_peer(session, party)
            except Exception as e:
                raise PeerUnknown(party) from e
            if peer.status is not PeerStatus.ACTIVE:
                raise PeerUnknown(party)
            # The current keys and those in a rotation's overlap window (DESIGN 8), within
            # their validity.
            keys = [
                k
                for k in list_keys(session, owner=party)
                if k.status.usable and (k.not_after is None or k.not_after > now)
            ]
            pem = _descriptor_pem(peer)
            # During a TLS rotation's overlap window the peer may present either certificate.
            tls_pems = [
                str(k.public["certificate_pem"])
                for k in keys
                if k.kind is KeyKind.TLS and "certificate_pem" in k.public
            ]
            if tls_pems:
                pem = "".join(p if p.endswith("\n") else p + "\n" for p in tls_pems)
        seals = {k.key_id: VerifyKey.from_dict(k.public) for k in keys if k.kind is KeyKind.SEAL}
        signatories = {
            k.key_id: VerifyKey.from_dict(k.public) for k in keys if k.kind is KeyKind.SIGNATORY
        }
        # New messages go to the peer's current encryption key (the newest active one).
        encryption = [
            RecipientKey.from_dict(k.public)
            for k in sorted(keys, key=lambda k: (k.status is KeyStatus.ACTIVE, k.not_before))
            if k.kind is KeyKind.ENCRYPTION
        ]
        if not seals or not encryption:
            raise PeerUnknown(party)
        result = PeerKeys(
            party=party,
            endpoint=peer.endpoint_url,
            tls_cert_sha256=peer.tls_cert_sha256,
            tls_certificate_pem=pem,
            seals=seals,
            signatories=signatories,
            encryption=encryption[-1],
        )
        self._peer_cache[party] = (stamp, result)
        return result

    def forget_peer_cache(self) -> None:
        self._peer_cache.clear()

    # -- Delivery worker wake-up -----------------------------------------------------

    def wake_worker(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def attach_wake(self, event: asyncio.Event) -> None:
        self._wake = event


def _registry_stamp(session: Session, party: str, now: datetime) -> object:
    """What `peer_keys` depends on for `party`, read with two narrow queries: the peer's
    status and descriptor digest, and for each of its keys the id, status, end of validity
    and whether it is within validity at `now`."""
    peer = session.exec(
        select(Peer.status, Peer.tls_cert_sha256, Peer.endpoint_url).where(
            col(Peer.party_id) == party
        )
    ).first()
    keys = session.exec(
        select(Key.key_id, Key.status, Key.not_after).where(col(Key.owner) == party)
    ).all()
    return (
        None if peer is None else tuple(peer),
        tuple(
            sorted(
                (key_id, str(status), not_after, not_after is None or not_after > now)
                for key_id, status, not_after in keys
            )
        ),
    )


def _descriptor_pem(peer: Peer) -> str:
    """The peer's TLS certificate, from the descriptor it was onboarded with (stored either
    as the signed envelope or as its payload)."""
    document = json.loads(peer.descriptor)
    if isinstance(document, dict) and "payload" in document:
        document = json.loads(Envelope.from_dict(document).payload)
    pem = document.get("tls_certificate_pem") if isinstance(document, dict) else None
    if not isinstance(pem, str):
        raise PeerUnknown(f"peer {peer.party_id} has no TLS certificate on record")
    return pem
