"""The delivery worker: a transactional outbox drained to peers (DESIGN guarantee 6).

Sending is "persist, then deliver": the local API commits a message and its outbox row in
one transaction; this worker leases due rows, streams them to the peer in batches, and
settles each row from the peer's answer:
- accepted, with a receipt that verifies under the peer's seal and binds the statement we
  signed: the receipt is stored and the row completed (delivered);
- refused: the message is marked failed at once (the peer's refusal is final);
- anything else (network error, peer down, no answer for the message): retried with
  exponential backoff and jitter until `max_attempts`, then marked failed.
A lease that expires (a worker killed mid-delivery) makes the row due again, and the peer
answers a redelivery with its original receipt, so nothing is lost and nothing doubled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import socket
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from accord.crypto import Envelope, VerificationError, verify_receipt
from accord.crypto.bundle import LogEvent
from accord.crypto.tls import client_context
from accord.gateway.audit import log as _audit
from accord.gateway.messages.parts import open_part
from accord.gateway.messages.stream import END, MAGIC, frame_lengths
from accord.gateway.node.runtime import PROFILE_HEADER, Node, PeerKeys, PeerUnknown
from accord.storage import (
    MessagePart,
    OutboxEntry,
    Outcome,
    StorageError,
    get_frames,
    get_parts_many,
    lease_due,
    release_leases,
    settle,
)

__all__ = ["DeliveryWorker", "PeerTransport"]

log = logging.getLogger("accord.delivery")
READ_CHUNK = 256 * 1024
# Batches on the wire at once (each up to `batch_size` messages, to any peers).
MAX_IN_FLIGHT = 4


class PeerTransport:
    """HTTPS with mutual TLS to peers: one client per peer, trusting only its pinned cert."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._clients: dict[str, tuple[tuple[str, str], httpx.AsyncClient]] = {}

    def client(self, peer: PeerKeys) -> httpx.AsyncClient:
        # A client is made for one pinned peer certificate and one certificate of ours:
        # when either is rotated, the next request goes over a new connection with the
        # current pair (our key upkeep swaps `node.tls` when it adopts a rotated TLS key).
        pair = (peer.tls_cert_sha256, self._node.tls.fingerprint)
        cached = self._clients.get(peer.party)
        if cached and cached[0] == pair:
            return cached[1]
        context = client_context(self._node.tls, peer.tls_certificate_pem.encode("ascii"))
        timeout = httpx.Timeout(120.0, connect=self._node.config.delivery.connect_timeout)
        client = httpx.AsyncClient(verify=context, timeout=timeout, base_url=peer.endpoint)
        self._clients[peer.party] = (pair, client)
        if cached:
            asyncio.get_running_loop().create_task(cached[1].aclose())
        return client

    async def deliver(self, peer: PeerKeys, body: AsyncIterator[bytes]) -> dict[str, Any]:
        response = await self.client(peer).post(
            "/peer/v1/messages",
            content=body,
            headers={
                "content-type": "application/vnd.accord.delivery-stream",
                PROFILE_HEADER: self._node.profile.digest,
            },
        )
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ValueError("peer answered without results")
        return data

    async def aclose(self) -> None:
        for _, client in self._clients.values():
            await client.aclose()
        self._clients.clear()


@dataclass(frozen=True)
class _Outgoing:
    lease: OutboxEntry
    envelope: bytes
    header: bytes
    statement_sha256: str
    parts: tuple[MessagePart, ...]


class DeliveryWorker:
    def __init__(
        self,
        node: Node,
        transport: PeerTransport,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._node = node
        self._transport = transport
        # The owner names this node's worker on this host, stable across restarts, so that
        # a restarted worker releases the leases its killed predecessor held.
        self._owner = owner or f"{socket.gethostname()}:{node.home.root}"
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._wake = asyncio.Event()
        node.attach_wake(self._wake)

    def recover(self) -> int:
        """Release the leases a previous run of this worker held when it was killed."""
        with self._node.db.session() as session:
            released = release_leases(session, self._owner)
        if released:
            log.info("took back %d delivery lease(s) from an interrupted run", released)
        return released

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set: a pipeline of up to `MAX_IN_FLIGHT` batches on the
        wire at once; as soon as one is settled, what is due is leased into its place.
        (Leasing in rounds, waiting for every batch of a round to settle before leasing
        again, left the wire idle while the slowest batch of each round finished.)"""
        cfg = self._node.config.delivery
        await asyncio.to_thread(self.recover)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                # Cleared before leasing: a message queued while the lease runs sets it
                # again, and the wait below returns at once.
                if in_flight and cfg.linger > 0:
                    # The wire is busy: let more messages come due, so that the next
                    # batch is fuller (a batch costs both nodes about as much as a message).
                    await asyncio.wait({*in_flight}, timeout=cfg.linger)
                self._wake.clear()
                started = 0
                free = MAX_IN_FLIGHT - len(in_flight)
                if free > 0:
                    try:
                        started = await self._start(free, in_flight)
                    except Exception:
                        log.exception("delivery round failed")
                if started and len(in_flight) < MAX_IN_FLIGHT:
                    continue
                waiters = {
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                }
                await asyncio.wait(
                    waiters | in_flight, timeout=cfg.poll_interval, return_when=FIRST_COMPLETED
                )
                for task in waiters:
                    task.cancel()
        finally:
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _start(self, batches: int, in_flight: set[asyncio.Task[None]]) -> int:
        """Lease up to `batches` batches' worth of due rows and put each batch on the wire
        as a task in `in_flight`; return how many rows were leased."""
        cfg = self._node.config.delivery
        leases = await asyncio.to_thread(self._lease, cfg.batch_size * batches, cfg.lease_seconds)
        for peer, rows in _by_peer(leases).items():
            for i in range(0, len(rows), cfg.batch_size):
                task = asyncio.create_task(self._deliver_logged(peer, rows[i : i + cfg.batch_size]))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        return len(leases)

    async def _deliver_logged(self, peer_party: str, leases: list[OutboxEntry]) -> None:
        try:
            await self._deliver(peer_party, leases)
        except Exception:
            # Its rows stay leased until the lease expires, then are delivered again.
            log.exception("delivery of a batch of %d to %s failed", len(leases), peer_party)
        finally:
            self._attempted(leases)

    async def run_once(self) -> int:
        """Lease what is due and deliver it, a batch per peer; return how many were leased."""
        cfg = self._node.config.delivery
        leases = await asyncio.to_thread(self._lease, cfg.batch_size * 4, cfg.lease_seconds)
        batches = []
        for peer, rows in _by_peer(leases).items():
            for i in range(0, len(rows), cfg.batch_size):
                batches.append(self._deliver(peer, rows[i : i + cfg.batch_size]))
        await asyncio.gather(*batches)
        return len(leases)

    def _lease(self, limit: int, seconds: float) -> list[OutboxEntry]:
        with self._node.db.session() as session:
            return lease_due(session, self._owner, self._node.clock(), limit, seconds)

    def _load(self, leases: Sequence[OutboxEntry]) -> list[_Outgoing]:
        """The batch's messages and parts: two queries, whatever the batch size."""
        ids = [lease.message_id for lease in leases]
        with self._node.db.session(readonly=True) as session:
            frames = get_frames(session, ids)
            parts = get_parts_many(session, ids)
        out = []
        for lease in leases:
            frame = frames.get(lease.message_id)
            if frame is None:
                raise StorageError(f"no message {lease.message_id!r}")
            envelope = Envelope.from_bytes(frame[0])
            out.append(
                _Outgoing(
                    lease=lease,
                    envelope=frame[0],
                    header=frame[1] or b"",
                    statement_sha256=envelope.payload_sha256,
                    parts=tuple(parts[lease.message_id]),
                )
            )
        return out

    async def _body(self, items: Sequence[_Outgoing]) -> AsyncIterator[bytes]:
        """The batch's delivery stream. Small pieces (frames, inline bodies, small parts)
        are gathered into chunks of up to `READ_CHUNK`: each chunk the client sends is a
        chunk header, a TLS record and a write, so a batch of 4 KiB messages sent piece by
        piece cost node A more CPU than the messages' own bytes."""
        pending = bytearray(MAGIC)
        for item in items:
            pending += frame_lengths(item.envelope, item.header)
            for part in item.parts:
                if part.data is not None:
                    pending += part.data
                elif part.size <= READ_CHUNK:
                    with open_part(self._node, part) as f:
                        pending += f.read()
                else:
                    if pending:
                        yield bytes(pending)
                        pending.clear()
                    with open_part(self._node, part) as f:
                        while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
                            yield chunk
                if len(pending) >= READ_CHUNK:
                    yield bytes(pending)
                    pending.clear()
        pending += END
        yield bytes(pending)

    async def _deliver(self, peer_party: str, leases: list[OutboxEntry]) -> None:
        try:
            peer = self._node.peer_keys(peer_party)
            items = await asyncio.to_thread(self._load, leases)
        except (PeerUnknown, StorageError, VerificationError) as e:
            await asyncio.to_thread(self._settle_all, leases, f"cannot prepare delivery: {e}")
            return
        try:
            answer = await self._transport.deliver(peer, self._body(items))
        except (httpx.HTTPError, ValueError, json.JSONDecodeError) as e:
            log.info("delivery of %d message(s) to %s failed: %s", len(items), peer_party, e)
            await asyncio.to_thread(self._settle_all, leases, _describe(e))
            return
        await asyncio.to_thread(self._settle, peer, items, answer["results"])

    def _attempted(self, leases: Sequence[OutboxEntry]) -> None:
        self._node.backlog.attempted(sum(1 for lease in leases if lease.attempts == 1))

    def _backoff(self, attempts: int) -> timedelta:
        cfg = self._node.config.delivery
        delay = min(cfg.max_delay, cfg.base_delay * 2 ** max(0, attempts - 1))
        return timedelta(seconds=delay * self._rng.uniform(0.5, 1.5))

    def _retry_or_fail(self, lease: OutboxEntry, error: str) -> Outcome:
        now = self._node.clock()
        if lease.attempts >= self._node.config.delivery.max_attempts:
            return Outcome(
                lease=lease,
                kind="failed",
                error=f"gave up after {lease.attempts} attempts: {error}",
            )
        return Outcome(
            lease=lease,
            kind="retry",
            error=error,
            next_attempt_at=now + self._backoff(lease.attempts),
        )

    def _commit(
        self, outcomes: Sequence[Outcome], events: Mapping[str, LogEvent] | None = None
    ) -> None:
        """Settle the whole batch in one transaction (statuses, events, receipts), with
        the audit leaf of each outcome that was applied and has one."""
        with self._node.db.session() as session:
            errors = settle(session, outcomes, now=self._node.clock())
            if events:
                _audit.record_all(
                    session,
                    (
                        events[o.lease.message_id]
                        for o, error in zip(outcomes, errors, strict=True)
                        if error is None and o.lease.message_id in events
                    ),
                )
        for outcome, error in zip(outcomes, errors, strict=True):
            if error is not None:
                log.info(
                    "%s not settled, left for its lease to expire: %s",
                    outcome.lease.message_id,
                    error,
                )

    def _settle_all(self, leases: Sequence[OutboxEntry], error: str) -> None:
        self._commit([self._retry_or_fail(lease, error) for lease in leases])

    def _settle(self, peer: PeerKeys, items: Sequence[_Outgoing], results: list[Any]) -> None:
        answers = {r.get("message_id"): r for r in results if isinstance(r, dict)}
        outcomes = []
        # The audit leaf of each outcome that records the peer's answer (DESIGN 7),
        # appended in the transaction that settles it.
        events: dict[str, LogEvent] = {}
        now = self._node.clock()
        for item in items:
            lease = item.lease
            answer = answers.get(lease.message_id)
            if answer is None or answer.get("verdict") == "retry":
                outcomes.append(self._retry_or_fail(lease, "the peer did not answer for it"))
            elif answer.get("verdict") == "refused":
                outcomes.append(Outcome(lease=lease, kind="failed", error="refused by the peer"))
                events[lease.message_id] = _delivery_event(self._node, peer, item, now, None)
            elif answer.get("verdict") == "accepted":
                receipt = self._check_receipt(peer, item, answer.get("receipt"))
                if receipt is None:
                    outcomes.append(
                        self._retry_or_fail(lease, "the peer's receipt does not verify")
                    )
                else:
                    outcomes.append(Outcome(lease=lease, kind="delivered", receipt=receipt))
                    events[lease.message_id] = _delivery_event(self._node, peer, item, now, receipt)
            else:
                outcomes.append(self._retry_or_fail(lease, "unintelligible answer"))
        self._commit(outcomes, events)

    def _check_receipt(self, peer: PeerKeys, item: _Outgoing, document: Any) -> bytes | None:
        try:
            envelope = Envelope.from_dict(document)
            verify_receipt(
                envelope,
                peer.seals,
                receiver=peer.party,
                message_id=item.lease.message_id,
                statement_sha256=item.statement_sha256,
            )
        except VerificationError as e:
            log.warning(
                "receipt for %s from %s refused: %s", item.lease.message_id, peer.party, e.reason
            )
            return None
        return envelope.to_bytes()


def _delivery_event(
    node: Node, peer: PeerKeys, item: _Outgoing, now: datetime, receipt: bytes | None
) -> LogEvent:
    """The audit event of a delivery's outcome: the peer's receipt stored, or its refusal."""
    if receipt is None:
        kind, verdict, digests = _audit.EventKind.DELIVERY_REFUSED, "refused", {}
    else:
        kind, verdict = _audit.EventKind.RECEIPT_STORED, "accepted"
        digests = {"receipt": hashlib.sha256(receipt).hexdigest()}
    return _audit.event(
        kind,
        node.party,
        now,
        message_id=item.lease.message_id,
        sender=node.party,
        recipient=peer.party,
        peer=peer.party,
        verdict=verdict,
        digests={"statement": item.statement_sha256, **digests},
    )


def _by_peer(leases: Sequence[OutboxEntry]) -> dict[str, list[OutboxEntry]]:
    by_peer: dict[str, list[OutboxEntry]] = {}
    for lease in leases:
        by_peer.setdefault(lease.peer, []).append(lease)
    return by_peer


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"peer answered HTTP {error.response.status_code}"
    if isinstance(error, httpx.ConnectError):
        return "peer unreachable"
    if isinstance(error, httpx.TimeoutException):
        return "peer timed out"
    return f"{type(error).__name__}: {error}"
