"""Key-change statements between nodes: the peer API route that receives them, and the
running node's key upkeep task that sends ours, retires ended overlap windows, warns of
expiry and adopts rotated keys.

Checklist for a statement a peer delivers (`POST /peer/v1/keys`):
 1. The TLS client certificate is pinned in the peer registry (its current certificate,
    or one in a rotation's overlap window): it names the peer.
 2. The body is one canonical DSSE envelope of at most 64 KiB.
 3. `gateway._keys.apply_peer_statement` verifies it against that peer's key history
    (`crypto.rotation`: signed by a current seal of the peer, not revoked, proof of
    possession of a new seal, not a replay of a superseded statement) and updates the
    registry in one transaction.
Every refusal looks the same to the peer; the reason goes to this node's log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from accord.crypto import Envelope, VerificationError
from accord.crypto.tls import TlsIdentity
from accord.gateway.keys.lifecycle import (
    KeyChangeRefused,
    KeyRing,
    apply_peer_statement,
    expiry_warnings,
)
from accord.gateway.messages.delivery import PeerTransport
from accord.gateway.messages.receive import REFUSED, _authenticated_peer
from accord.gateway.node.runtime import Node, PeerUnknown
from accord.storage import (
    StorageError,
    expire_overlaps,
    list_keys,
    mark_announcement,
    pending_announcements,
)

__all__ = ["KeyUpkeep", "peer_keys_router"]

log = logging.getLogger("accord.keys")
MAX_STATEMENT = 64 * 1024
STATEMENT_MEDIA_TYPE = "application/vnd.accord.key-change+json"
UPKEEP_SECONDS = 2.0
_MAX_BACKOFF = 300.0
_WARN_EVERY = timedelta(hours=24)


def peer_keys_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/peer/v1")

    @router.post("/keys", include_in_schema=False)
    async def key_change(request: Request) -> JSONResponse:
        party = await asyncio.to_thread(_authenticated_peer, node, request)  # 1
        if party is None:
            log.warning("key change refused: client certificate not pinned to any peer")
            return JSONResponse(REFUSED, status_code=403)
        body = b""
        async for chunk in request.stream():  # 2
            body += chunk
            if len(body) > MAX_STATEMENT:
                log.warning(
                    "key change from %s refused: larger than %d bytes", party, MAX_STATEMENT
                )
                return JSONResponse(REFUSED, status_code=403)
        try:
            envelope = Envelope.from_bytes(body)
            outcome = await asyncio.to_thread(_apply, node, party, envelope)  # 3
        except (VerificationError, KeyChangeRefused, StorageError) as e:
            reason = e.reason if isinstance(e, VerificationError) else str(e)
            log.warning("key change from %s refused: %s", party, reason)
            return JSONResponse(REFUSED, status_code=403)
        if node.refresh_pins is not None:
            # A TLS rotation: the peer presents its new certificate as soon as it has our
            # answer, so that certificate is trusted by our server before we answer.
            try:
                await node.refresh_pins()
            except Exception:
                # The statement is applied; the periodic pin refresh will trust it.
                log.exception("could not trust the peer's new certificate at once")
        log.info("key change from %s: %s", party, outcome)
        return JSONResponse({"result": outcome})

    return router


def _apply(node: Node, party: str, envelope: Envelope) -> str:
    with node.db.session() as session:
        outcome = apply_peer_statement(session, party, envelope, node.clock())
    node.forget_peer_cache()
    return outcome


class KeyUpkeep:
    """The running node's key chores, every `UPKEEP_SECONDS`:
    - send queued key-change statements to their peers, in order, with backoff;
    - retire keys whose overlap window ended;
    - adopt rotated keys (the node's key loader decides which, see `load_key_ring`),
      including a rotated TLS identity: `on_tls(peer_tls, local_tls)` is called on the
      event loop after every reload, and loads them into the live servers' contexts
      (`accord serve`), so no restart is needed;
    - log expiry warnings once a day.
    """

    def __init__(
        self,
        node: Node,
        transport: PeerTransport,
        on_tls: Callable[[TlsIdentity, TlsIdentity], None] | None = None,
    ) -> None:
        self._node = node
        self._transport = transport
        self._on_tls = on_tls
        self._next_try: dict[str, float] = {}
        self._generation: tuple[object, ...] | None = None
        self._warned_at: datetime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("key upkeep round failed")
            try:
                await asyncio.wait_for(stop.wait(), UPKEEP_SECONDS)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """One round; returns how many statements reached their peers."""
        await asyncio.to_thread(self._housekeeping)
        # Adopt first (a new decryption key must be in the ring before peers learn of it),
        # then announce, then adopt again (a held-back seal or TLS certificate is released
        # once announced).
        self._reload_tls(await asyncio.to_thread(self._adopt_keys))
        sent = await self.send_announcements()
        if sent:
            self._reload_tls(await asyncio.to_thread(self._adopt_keys))
        return sent

    def _reload_tls(self, identities: tuple[TlsIdentity, TlsIdentity] | None) -> None:
        # On the event loop, not in the loader's thread: the servers create their
        # connections from these contexts on the loop.
        if identities is not None and self._on_tls is not None:
            self._on_tls(*identities)

    def _housekeeping(self) -> None:
        now = self._node.clock()
        with self._node.db.session() as session:
            for key in expire_overlaps(session, now=now):
                log.info(
                    "overlap window of %s key %s ended: retired", key.kind.value, key.key_id[:16]
                )
            if self._warned_at is None or now - self._warned_at >= _WARN_EVERY:
                for line in expiry_warnings(session, self._node.party, now):
                    log.warning("key expiry: %s", line)
                self._warned_at = now

    async def send_announcements(self) -> int:
        node = self._node
        with node.db.session(readonly=True) as session:
            pending = [(a.id, a.peer, a.envelope) for a in pending_announcements(session)]
        sent = 0
        blocked: set[str] = set()
        for announcement_id, party, envelope in pending:
            assert announcement_id is not None
            if party in blocked or time.monotonic() < self._next_try.get(party, 0.0):
                continue
            error = await self._post(party, envelope.encode("utf-8"))
            with node.db.session() as session:
                row = mark_announcement(session, announcement_id, now=node.clock(), error=error)
                attempts = row.attempts
            if error is None:
                sent += 1
                self._next_try.pop(party, None)
                log.info("key change announced to %s", party)
            else:
                # Statements reach a peer in order: a later one waits for the earlier.
                blocked.add(party)
                delay = min(_MAX_BACKOFF, 2.0**attempts)
                self._next_try[party] = time.monotonic() + delay
                log.warning("key change not yet announced to %s (%s); retry in %.0f s", party,
                            error, delay)  # fmt: skip
        return sent

    async def _post(self, party: str, body: bytes) -> str | None:
        try:
            peer = self._node.peer_keys(party)
        except PeerUnknown:
            return "peer is not active in the registry"
        try:
            response = await self._transport.client(peer).post(
                "/peer/v1/keys", content=body, headers={"content-type": STATEMENT_MEDIA_TYPE}
            )
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        if response.status_code != 200:
            return f"peer answered {response.status_code}"
        return None

    def _adopt_keys(self) -> tuple[TlsIdentity, TlsIdentity] | None:
        """Reload the node's seal, decryption keys and TLS identity when the key history
        changed; returns the TLS identities to present to peers and to local clients
        (None if nothing was reloaded)."""
        node = self._node
        if node.key_loader is None:
            return None
        now = node.clock()
        with node.db.session(readonly=True) as session:
            generation = (
                tuple((k.key_id, k.status.value) for k in list_keys(session, owner=node.party)),
                tuple(a.id for a in pending_announcements(session)),
                # Hourly as well: a held-back seal is adopted once half its window passed.
                int(now.timestamp() // 3600),
            )
        if generation == self._generation:
            return None
        self._generation = generation
        keys = node.key_loader(now)
        if keys.seal.key_id != node.seal.key_id:
            log.info("now sealing with key %s", keys.seal.key_id[:16])
        node.seal = keys.seal
        node.encryption = keys.encryption
        # New client connections to peers (delivery, forwarding) present `node.tls`.
        node.tls = keys.tls
        return keys.tls, keys.home_tls if isinstance(keys, KeyRing) else keys.tls
